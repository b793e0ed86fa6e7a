"""Multi-task: loss balancing (uncertainty, GradNorm, DWA) and gradient methods (MGDA-UB, PCGrad)."""

from lifelong.plugins.multitask.dwa import DWA
from lifelong.plugins.multitask.gradnorm import GradNorm
from lifelong.plugins.multitask.mgda_ub import MGDAUB
from lifelong.plugins.multitask.pcgrad import PCGrad
from lifelong.plugins.multitask.uncertainty import UncertaintyWeighting

__all__ = ["DWA", "GradNorm", "MGDAUB", "PCGrad", "UncertaintyWeighting"]
