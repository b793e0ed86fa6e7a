"""Distillation: a frozen teacher guides the learner through its outputs, features or gradients."""

from lifelong.plugins.distillation.attention import AT
from lifelong.plugins.distillation.crd import CRD
from lifelong.plugins.distillation.fitnet import FitNet
from lifelong.plugins.distillation.jacobian import JacobianMatching
from lifelong.plugins.distillation.kd import KD
from lifelong.plugins.distillation.l2t_ww import L2TWW
from lifelong.plugins.distillation.rkd import RKD
from lifelong.plugins.distillation.vid import VID

__all__ = ["AT", "CRD", "FitNet", "JacobianMatching", "KD", "L2TWW", "RKD", "VID"]
