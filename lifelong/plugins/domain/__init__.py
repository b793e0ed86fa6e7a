"""Domain adaptation: training on a labeled source stream for an unlabeled target stream."""

from lifelong.plugins.domain.adda import ADDA
from lifelong.plugins.domain.coral import CORAL
from lifelong.plugins.domain.dann import DANN
from lifelong.plugins.domain.importance_weighting import ImportanceWeighting
from lifelong.plugins.domain.mmd import MMD
from lifelong.plugins.domain.self_training import SelfTraining

__all__ = ["ADDA", "CORAL", "DANN", "ImportanceWeighting", "MMD", "SelfTraining"]
