"""Presets for the regularization methods, each with its paper's defaults.

* ``ewc`` — EWC, one Fisher-weighted penalty per past experience
  (Kirkpatrick et al., PNAS 2017).
* ``online_ewc`` — one running Fisher with decay gamma (Schwarz et al., ICML 2018).
* ``si`` — synaptic intelligence, path-integral importance (Zenke et al., ICML 2017).
* ``lwf`` — learning without forgetting, distillation of the last snapshot
  (Li & Hoiem, ECCV 2016).
* ``mas`` — memory aware synapses, output-sensitivity importance
  (Aljundi et al., ECCV 2018).

Each preset is one plugin; ``consolidate_every: N`` makes it usable on a
task-free stream without a boundary detector (it consolidates every N
batches). The plugins' own docstrings say where each default comes from.
"""

from __future__ import annotations

from typing import Any

from lifelong.hookspecs import hookimpl
from lifelong.strategies import Strategy


def ewc(*, ewc_lambda: float = 100.0, fisher_samples: int = 1024,
        consolidate_every: int = 0) -> Strategy:
    """EWC (Kirkpatrick et al. 2017): a Fisher-weighted penalty per past experience."""
    return Strategy(plugins=[{"name": "ewc", "ewc_lambda": ewc_lambda,
                              "fisher_samples": fisher_samples,
                              "consolidate_every": consolidate_every}])


def online_ewc(*, ewc_lambda: float = 100.0, gamma: float = 1.0, fisher_samples: int = 1024,
               consolidate_every: int = 0) -> Strategy:
    """Online EWC (Schwarz et al. 2018): one running Fisher, decayed by gamma, latest anchor."""
    return Strategy(plugins=[{"name": "online_ewc", "ewc_lambda": ewc_lambda, "gamma": gamma,
                              "fisher_samples": fisher_samples,
                              "consolidate_every": consolidate_every}])


def si(*, c: float = 0.1, xi: float = 0.1, consolidate_every: int = 0) -> Strategy:
    """SI (Zenke et al. 2017): path-integral importance, consolidated at boundaries."""
    return Strategy(plugins=[{"name": "si", "c": c, "xi": xi,
                              "consolidate_every": consolidate_every}])


def lwf(*, lwf_lambda: float = 1.0, temperature: float = 2.0, multihead: bool = False,
        consolidate_every: int = 0) -> Strategy:
    """LwF (Li & Hoiem 2016): distill the previous model's outputs on the current data."""
    return Strategy(plugins=[{"name": "lwf", "lwf_lambda": lwf_lambda,
                              "temperature": temperature, "multihead": multihead,
                              "consolidate_every": consolidate_every}])


def mas(*, mas_lambda: float = 1.0, importance_samples: int = 1024,
        consolidate_every: int = 0) -> Strategy:
    """MAS (Aljundi et al. 2018): unsupervised importance from the output's sensitivity."""
    return Strategy(plugins=[{"name": "mas", "mas_lambda": mas_lambda,
                              "importance_samples": importance_samples,
                              "consolidate_every": consolidate_every}])


PRESETS = (ewc, online_ewc, si, lwf, mas)


@hookimpl
def register(registry: Any) -> None:
    for factory in PRESETS:
        registry.add("strategy", factory.__name__, factory)
