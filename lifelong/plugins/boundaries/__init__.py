"""Boundaries: detectors that mark experience boundaries nobody announced (task-free streams)."""

from lifelong.plugins.boundaries.adwin import ADWIN
from lifelong.plugins.boundaries.every_n import EveryN
from lifelong.plugins.boundaries.kswin import KSWIN
from lifelong.plugins.boundaries.page_hinkley import PageHinkley
from lifelong.plugins.boundaries.plateau import Plateau

__all__ = ["ADWIN", "KSWIN", "EveryN", "PageHinkley", "Plateau"]
