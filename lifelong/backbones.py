"""Backbones: an MLP, a small CNN, and a reduced ResNet-18 for images.

Every factory takes the stream's ``input_shape`` and ``num_classes`` (the
run fills them in) plus its own keyword parameters (settable from YAML).
Each network exposes ``features(x)`` (the penultimate representation) and
``head`` (the last linear layer), which distillation and expansion methods use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl

__all__ = ["MLP", "SmallCNN", "ReducedResNet18", "mlp", "cnn", "resnet"]


class MLP(nn.Module):
    """A fully connected ReLU network on flattened inputs."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 256),
                 dropout: float = 0.0, norm: str | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if norm is not None:  # normalisation (with its scale and bias) before the ReLU
                layers.append(nn.LayerNorm(h) if norm == "layer" else nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class SmallCNN(nn.Module):
    """Two or more conv-ReLU-maxpool blocks and a linear head."""

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int] = (32, 64),
                 spatial: int = 28) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c, s = in_channels, spatial
        for out in channels:
            blocks += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, s = out, s // 2
        self.body = nn.Sequential(*blocks, nn.Flatten())
        self.head = nn.Linear(c * max(s, 1) ** 2, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ReducedResNet18(nn.Module):
    """ResNet-18 with ``nf`` base filters (20 in Lopez-Paz & Ranzato 2017, GEM)."""

    def __init__(self, in_channels: int, num_classes: int, nf: int = 20,
                 blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(nf), nn.ReLU())
        layers: list[nn.Module] = []
        c = nf
        for i, n in enumerate(blocks):
            out = nf * 2**i
            for j in range(n):
                layers.append(_BasicBlock(c, out, 2 if (j == 0 and i > 0) else 1))
                c = out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def features(self, x: Tensor) -> Tensor:
        out = self.layers(self.stem(x))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _image_shape(input_shape: Sequence[int], name: str) -> tuple[int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"backbone {name!r} needs image inputs (C, H, W), the stream gives "
                          f"{tuple(input_shape)}; use backbone 'mlp'")
    return int(input_shape[0]), int(input_shape[1])


def _widths(name: str, key: str, widths: Sequence[int] | None) -> None:
    from lifelong.validation import check_number

    if widths is None:
        return
    if not isinstance(widths, list | tuple) or not widths:
        raise ConfigError(f"backbone {name!r}: {key} must be a non-empty list of layer widths, "
                          f"got {widths!r}")
    for i, w in enumerate(widths):
        check_number(f"backbone {name!r}", f"{key}[{i}]", w, min=1, max=2**24, integer=True)


def _fits(name: str, n_params: int, key: str) -> None:
    """Parameters, gradients and two optimizer moments must fit in memory (float32)."""
    from lifelong.validation import check_memory

    check_memory(f"backbone {name!r}", key, 4 * 4 * n_params, fix=f"lower {key}")


def mlp(*, input_shape: Sequence[int], num_classes: int, hidden: list[int] | None = None,
        dropout: float = 0.0, norm: str | None = None) -> MLP:
    """MLP on flattened inputs; ``hidden`` widths default to [256, 256].

    ``norm``: ``"layer"`` or ``"batch"`` puts a LayerNorm / BatchNorm1d after each
    hidden linear layer (``None``: none).
    """
    from lifelong.validation import check_number

    if norm not in (None, "layer", "batch"):
        raise ConfigError(f"backbone 'mlp': norm must be 'layer', 'batch' or null, got {norm!r}")
    _widths("mlp", "hidden", hidden)
    check_number("backbone 'mlp'", "dropout", dropout, min=0.0, max=1.0)
    if dropout == 1.0:
        raise ConfigError("backbone 'mlp': dropout must be below 1 (1 drops every unit), got 1")
    dims = [math.prod(input_shape), *(hidden or (256, 256)), num_classes]
    _fits("mlp", sum((a + 1) * b for a, b in zip(dims, dims[1:])), "hidden")
    return MLP(math.prod(input_shape), num_classes, tuple(hidden or (256, 256)), dropout, norm)


def cnn(*, input_shape: Sequence[int], num_classes: int, channels: list[int] | None = None) -> SmallCNN:
    """Small CNN: conv-ReLU-maxpool blocks (default channels [32, 64]) and a linear head."""
    c, s = _image_shape(input_shape, "cnn")
    _widths("cnn", "channels", channels)
    chans = [c, *(channels or (32, 64))]
    _fits("cnn", sum(9 * a * b + b for a, b in zip(chans, chans[1:])) + chans[-1] * num_classes
          * max(s // 2 ** (len(chans) - 1), 1) ** 2, "channels")
    return SmallCNN(c, num_classes, tuple(channels or (32, 64)), s)


def resnet(*, input_shape: Sequence[int], num_classes: int, nf: int = 20) -> ReducedResNet18:
    """Reduced ResNet-18 (GEM's, ``nf``=20 base filters) for images."""
    from lifelong.validation import check_number

    c, _ = _image_shape(input_shape, "resnet")
    check_number("backbone 'resnet'", "nf", nf, min=1, max=4096, integer=True)
    _fits("resnet", 12 * 9 * (8 * nf) ** 2 // 4, "nf")
    return ReducedResNet18(c, num_classes, nf)


@hookimpl
def register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add("backbone", "mlp", mlp)
    registry.add("backbone", "cnn", cnn)
    registry.add("backbone", "resnet", resnet)
