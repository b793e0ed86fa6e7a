"""Expansion methods: the model grows at experience boundaries (PNN columns, DEN units)."""

from lifelong.plugins.expansion.den import DEN
from lifelong.plugins.expansion.pnn import PNN

__all__ = ["DEN", "PNN"]
