"""Distillation and transfer: knowledge from frozen teachers or sources into the learner."""

from lifelong.plugins.distillation.l2t_ww import L2TWW

__all__ = ["L2TWW"]
