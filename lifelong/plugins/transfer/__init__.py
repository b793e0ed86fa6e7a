"""Transfer: fine-tuning presets that start from a source network and choose what trains, and how fast."""

__all__ = ["finetune", "discriminative", "scale_bias"]
