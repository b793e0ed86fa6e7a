"""Expansion methods: the model grows at experience boundaries (progressive networks)."""

from lifelong.plugins.expansion.pnn import PNN

__all__ = ["PNN"]
