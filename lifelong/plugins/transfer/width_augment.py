"""Width augmentation: new units beside a pre-trained layer, both groups L2-normalised and scaled.

WA-CNN, a "developmental" network: to transfer a pre-trained network, a
layer (by default the top hidden layer, the paper's fc7) is widened by
``width`` new, randomly initialised units ``h^{k+} = f(W^{k+} h^{k-1})``
beside the pre-trained ones ``h^k = f(W^k h^{k-1})``; the layer above (the
classifier, or the next hidden layer) receives both groups. Because the new
units start with activations on another scale than the pre-trained ones,
they would learn at another pace, so each group is L2-normalised on its own
and multiplied by a learned per-unit scale (the paper's eqs. 1-2)::

    y^k   = gamma   * h^k   / ||h^k||_2
    y^{k+} = gamma+ * h^{k+} / ||h^{k+}||_2

``normalize=False`` is the paper's ablation WA-CNN-ori (the two groups are
concatenated as they are). The widening happens when the first experience
starts (the ``expand_model`` hook, after ``finetune`` copied the source's
weights in ``before_training``); the pre-trained layers keep their weights
and the old units' activations ``h^k`` are exactly the source network's.
The logits change at that moment: the classifier's inputs are now the
normalised and scaled groups, and its columns for the new units are new
(the paper re-initialises the classifier for the target task: compose with
``finetune`` and ``new_head: true``). The plugin's state (the layer and the
width) rebuilds the widened network before a checkpoint's weights load, so
a resumed run is exact.

Wang, Ramanan & Hebert, "Growing a Brain: Fine-Tuning by Increasing Model
Capacity", CVPR 2017. Hyper-parameters and where they come from:

* ``layer=None``: the top hidden layer (section 4.2 adds every new unit to
  the top layer ``L_K``, fc7 of AlexNet); any hidden ``Linear`` of the mlp
  may be named (``"body.1"``).
* ``width=None``: half the layer's units (section 5.2 analyses WA-CNN with
  2048 new units on AlexNet's 4096-unit fc7; section 5.1 tries 1024 and 2048).
* ``normalize=True`` (section 4.3; ``False`` is WA-CNN-ori of table 3).
* ``scale_init=10.0``: section 4.3 follows ParseNet (Liu, Rabinovich & Berg,
  2016) in scaling the normalised activations to a larger value than 1,
  "e.g. 10 or 20"; the scales are then learned by back-propagation.
* ``pretrained_lr_mult=0.1``: section 5's implementation details train the
  new layers (the new units and the classifier) at 10 times the rate of the
  fine-tuned pre-trained layers; here the new units, the scales and the head
  train at the learner's rate and the pre-trained body at ``0.1`` times it
  (``0`` freezes it: the paper's "New" setting of table 1; its "FC7-New" and
  "FC6-New", fine-tuning from a layer up, are ``finetune``'s ``freeze_upto``;
  the default is its "All"). Training is one stage, as in the paper: no
  head-only warm-up before the whole network trains. The paper's SGD with
  momentum 0.9 and weight decay 0.0005 is the learner's optimizer
  configuration (see ``examples/width_augment.yaml``); its step learning-rate
  schedule (divided by 10 during fine-tuning) is not part of this plugin.

Backbones: ``mlp`` without normalisation layers (the new units would need
their own); a dropout after the widened layer drops both groups, and the
normalisation reads the dropped activations, as in the paper's Caffe nets
where ReLU and dropout act in place on fc7. ``cnn``: a convolution is widened
by ``width`` new channels (same kernel, stride and padding), after its ReLU
and pooling each group is L2-normalised over all of a sample's activations
(the flattened map the head reads, as for fc7) and scaled per channel; the
paper widens fully connected layers only, so this is the direct analogue
rather than its experiment. Only one layer is widened (the paper's WWA-CNN
widens fc6 and fc7 recursively; not part of this plugin).

Examples
--------
>>> from lifelong.testing import tiny_stream, make_learner
>>> stream = tiny_stream()
>>> learner = make_learner([WidthAugment(width=8)], stream).fit(stream)
>>> type(learner.model).__name__, tuple(learner.model.plus.weight.shape)
('WidthAugmentedNet', (8, 16))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lifelong.backbones import MLP, SmallCNN
from lifelong.errors import CheckpointError, CompositionError, ConfigError
from lifelong.features import check_layer
from lifelong.hookspecs import hookimpl
from lifelong.validation import check_number, state_get, state_number

__all__ = ["WidthAugment", "WidthAugmentedNet", "normalize_and_scale"]

EPS = 1e-12  # F.normalize's default: an all-zero activation vector stays zero
LAYERS = (nn.Linear, nn.Conv2d)


def normalize_and_scale(h: Tensor, gamma: Tensor | None) -> Tensor:
    """``gamma * h / ||h||_2`` for each sample (row of ``h``); ``gamma=None`` leaves ``h`` as
    it is (WA-CNN-ori).

    ``h`` is ``[batch, units]`` or, for a convolutional layer, ``[batch, channels, H, W]``:
    the norm is then over all of a sample's activations and ``gamma`` holds one scale per
    channel, shared by its positions.

    >>> normalize_and_scale(torch.tensor([[3.0, 4.0]]), torch.tensor([10.0, 1.0])).tolist()
    [[6.0, 0.800000011920929]]
    """
    if gamma is None:
        return h
    unit = F.normalize(h.flatten(1), p=2.0, dim=1, eps=EPS).view_as(h)
    return unit * gamma.view(1, -1, *([1] * (h.dim() - 2)))


class WidthAugmentedNet(nn.Module):
    """An mlp (or cnn) whose hidden layer ``body[index]`` has ``width`` new units beside it.

    Keeps the backbone's ``body`` and ``head`` (their parameter names and weights); adds
    ``plus`` (the new units' incoming weights ``W^{k+}``: a ``Linear``, or a ``Conv2d`` of
    the widened convolution's kernel, stride and padding), ``plus_out`` (their weights into
    the layer above: the next hidden layer or the head) and, with ``normalize``, the
    scales ``scale`` (pre-trained units) and ``scale_plus`` (new units).
    """

    def __init__(self, body: nn.Sequential, head: nn.Linear, *, index: int, width: int,
                 normalize: bool, scale_init: float) -> None:
        super().__init__()
        self.body, self.head = body, head
        self.index, self.width, self.normalize = index, width, normalize
        layer = body[index]
        above = [i for i in range(index + 1, len(body)) if isinstance(body[i], LAYERS)]
        self.above: int | None = above[0] if above else None
        self.plus: nn.Linear | nn.Conv2d
        self.plus_out: nn.Linear | nn.Conv2d
        if isinstance(layer, nn.Conv2d):
            n_old = layer.out_channels
            self.plus = nn.Conv2d(layer.in_channels, width, layer.kernel_size, layer.stride,
                                  layer.padding)
            if self.above is not None:
                nxt = body[self.above]
                self.plus_out = nn.Conv2d(width, nxt.out_channels, nxt.kernel_size, nxt.stride,
                                          nxt.padding, bias=False)
            else:  # the flattened feature map feeds the head: positions per channel
                positions = head.in_features // n_old
                self.plus_out = nn.Linear(width * positions, head.out_features, bias=False)
        else:
            n_old = layer.out_features
            self.plus = nn.Linear(layer.in_features, width)
            out = body[self.above].out_features if self.above is not None else head.out_features
            self.plus_out = nn.Linear(width, out, bias=False)
        self.scale: nn.Parameter | None = None
        self.scale_plus: nn.Parameter | None = None
        if normalize:
            self.scale = nn.Parameter(torch.full((n_old,), float(scale_init)))
            self.scale_plus = nn.Parameter(torch.full((width,), float(scale_init)))

    def groups(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The widened layer's two groups, normalised and scaled: ``(y^k, y^{k+})``."""
        body, k = self.body, self.index
        h = x
        for m in body[:k]:
            h = m(h)
        old, new = body[k](h), self.plus(h)
        stop = self.above if self.above is not None else len(body)
        for m in body[k + 1:stop]:   # ReLU, dropout, pooling: parameter-free; not the flatten
            if not isinstance(m, nn.Flatten):
                old, new = m(old), m(new)
        return normalize_and_scale(old, self.scale), normalize_and_scale(new, self.scale_plus)

    def forward(self, x: Tensor) -> Tensor:
        old, new = self.groups(x)
        if self.above is None:
            return self.head(old.flatten(1)) + self.plus_out(new.flatten(1))
        h = self.body[self.above](old) + self.plus_out(new)
        for m in self.body[self.above + 1:]:
            h = m(h)
        return self.head(h)


def _parts(model: nn.Module) -> tuple[nn.Sequential, nn.Linear]:
    if isinstance(model, MLP | SmallCNN | WidthAugmentedNet):
        return model.body, model.head
    raise ConfigError(f"plugin 'width_augment' widens the mlp and cnn backbones; got "
                      f"{type(model).__name__}: use backbone: {{name: mlp}} or {{name: cnn}}")


def _uniform(shape: tuple[int, ...], fan_in: int, gen: torch.Generator) -> Tensor:
    """PyTorch's default Linear init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, from ``gen``."""
    bound = 1 / math.sqrt(max(fan_in, 1))
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


class WidthAugment:
    """WA-CNN: widen a pre-trained layer by new units; normalise and scale both unit groups."""

    name = "width_augment"
    owns = ()

    def __init__(self, *, layer: str | None = None, width: int | None = None,
                 normalize: bool = True, scale_init: float = 10.0,
                 pretrained_lr_mult: float = 0.1, seed: int = 0) -> None:
        owner = "plugin 'width_augment'"
        check_number(owner, "width", width, integer=True, min=1, allow_none=True)
        check_number(owner, "scale_init", scale_init, above=0)
        check_number(owner, "pretrained_lr_mult", pretrained_lr_mult, min=0)
        check_number(owner, "seed", seed, integer=True, min=0)
        if layer is not None and not isinstance(layer, str):
            raise ConfigError(f"{owner}: layer must be a module name such as 'body.1' or null "
                              f"(the top hidden layer), got {layer!r}")
        if not isinstance(normalize, bool):
            raise ConfigError(f"{owner}: normalize must be true or false, got {normalize!r}")
        self.layer = layer
        self.width = width
        self.normalize = normalize
        self.scale_init = scale_init
        self.pretrained_lr_mult = pretrained_lr_mult
        self.seed = seed
        self.index_: int | None = None     # the widened Linear's index in body
        self.width_: int | None = None
        self.widened_ = False

    # ------------------------------------------------------------------ assembly
    def _resolve(self, model: nn.Module) -> tuple[int, int]:
        """The index in ``body`` of the layer to widen, and the number of new units."""
        body, _ = _parts(model)
        if any(isinstance(m, nn.LayerNorm | nn.BatchNorm1d) for m in body):
            raise ConfigError("plugin 'width_augment': the mlp has normalisation layers, which "
                              "the new units cannot share; use backbone: {name: mlp, norm: null}")
        linears = [i for i, m in enumerate(body) if isinstance(m, LAYERS)]
        if not linears:
            raise ConfigError("plugin 'width_augment': the mlp has no hidden layer to widen; "
                              "give it one (hidden: [256])")
        if self.layer is None:
            index = linears[-1]
        else:
            check_layer(model, self.layer, owner=self.name, key="layer")
            names = {f"body.{i}": i for i in linears}
            if self.layer not in names:
                raise ConfigError(f"plugin 'width_augment': layer {self.layer!r} is not a hidden "
                                  f"Linear or Conv2d layer of the backbone; name one of "
                                  f"{', '.join(map(repr, names))}")
            index = names[self.layer]
        layer = body[index]
        n = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        width = self.width if self.width is not None else max(1, n // 2)
        return index, int(width)

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        index, width = self._resolve(learner.model)   # bad input: before the first batch
        if not self.widened_:
            self.index_, self.width_ = index, width

    @hookimpl
    def parameter_groups(self, learner: Any, model: nn.Module) -> dict[str, float] | None:
        if self.pretrained_lr_mult == 1:
            return None
        body, _ = _parts(model)
        return {f"body.{n}": float(self.pretrained_lr_mult)
                for n, _ in body.named_parameters()}

    def _build(self, model: nn.Module) -> WidthAugmentedNet:
        body, head = _parts(model)
        assert self.index_ is not None and self.width_ is not None
        with torch.random.fork_rng(devices=[]):  # the modules' own init draws: values set next
            return WidthAugmentedNet(body, head, index=self.index_, width=self.width_,
                                     normalize=self.normalize,
                                     scale_init=self.scale_init).to(head.weight.device)

    @hookimpl
    def expand_model(self, learner: Any, experience: Any) -> nn.Module | None:
        if self.widened_:
            return None
        if "body" in learner.features.names:  # requested in before_training, which ran already
            raise CompositionError(
                "plugin 'width_augment': another plugin captures the features of layer 'body', "
                "which the widened network does not run as one module (its top layer has two "
                "unit groups); give that plugin a layer inside it (e.g. 'body.1') or drop one")
        net = self._build(learner.model)
        gen = torch.Generator().manual_seed(int(self.seed))
        w = net.plus.weight
        fan_in = w[0].numel()                     # inputs x kernel positions of one new unit
        above = net.head if net.above is None else net.body[net.above]
        fan = above.weight[0].numel() + net.plus_out.weight[0].numel()  # reads both groups
        with torch.no_grad():
            w.copy_(_uniform(tuple(w.shape), fan_in, gen))
            net.plus.bias.copy_(_uniform(tuple(net.plus.bias.shape), fan_in, gen))
            net.plus_out.weight.copy_(_uniform(tuple(net.plus_out.weight.shape), fan, gen))
        self.widened_ = True
        return net

    # ------------------------------------------------------------------ resume
    def grown_model(self, learner: Any) -> nn.Module | None:
        """The widened network this state describes (the checkpoint's weights load next)."""
        if not self.widened_:
            return None
        return self._build(learner.model)

    def state_dict(self) -> dict[str, Any]:
        return {"widened": self.widened_, "index": self.index_, "width": self.width_}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        owner = self.name
        widened = state_get(state, "widened", owner=owner)
        if not isinstance(widened, bool):
            raise CheckpointError(f"checkpoint: plugin {owner!r}: 'widened' must be true or "
                                  f"false, got {widened!r}")
        index = state_number(state, "index", owner=owner, integer=True, min=0, allow_none=True)
        width = state_number(state, "width", owner=owner, integer=True, min=1, allow_none=True)
        if widened and (index is None or width is None):
            raise CheckpointError(f"checkpoint: plugin {owner!r}: a widened state needs its "
                                  "'index' and 'width'")
        if widened and self.index_ is not None and (index, width) != (self.index_, self.width_):
            raise CheckpointError(f"checkpoint: plugin {owner!r} widened body.{index} by {width} "
                                  f"units; this run widens body.{self.index_} by {self.width_}: "
                                  "resume with the same layer and width")
        self.widened_, self.index_, self.width_ = widened, index, width


@hookimpl
def register(registry: Any) -> None:
    registry.add("plugin", "width_augment", WidthAugment)
