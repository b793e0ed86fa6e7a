"""Distillation: a frozen teacher guides the learner through its outputs, features or gradients."""

__all__ = ["kd", "fitnet", "attention", "jacobian", "rkd", "vid", "crd"]
