"""Regularization: penalties that keep the parameters or outputs that mattered for the past."""

from lifelong.plugins.regularization.ewc import EWC, OnlineEWC
from lifelong.plugins.regularization.lwf import LwF
from lifelong.plugins.regularization.mas import MAS
from lifelong.plugins.regularization.si import SI

__all__ = ["EWC", "LwF", "MAS", "OnlineEWC", "SI"]
