"""Transfer: fine-tuning presets that start from a source network and choose what trains, and how fast."""

from lifelong.plugins.transfer.discriminative import DiscriminativeLR
from lifelong.plugins.transfer.finetune import FineTune
from lifelong.plugins.transfer.scale_bias import ScaleBiasPatch
from lifelong.plugins.transfer.width_augment import WidthAugment

__all__ = ["DiscriminativeLR", "FineTune", "ScaleBiasPatch", "WidthAugment"]
