"""Evaluation: views of the learner's one evaluation engine (accuracy matrix, anytime, prequential)."""


from lifelong.plugins.evaluation.accuracy_matrix import AccuracyMatrix
from lifelong.plugins.evaluation.anytime import AnytimeAccuracy
from lifelong.plugins.evaluation.domain_accuracy import DomainAccuracy
from lifelong.plugins.evaluation.prequential import Prequential
from lifelong.plugins.evaluation.resources import Resources
from lifelong.plugins.evaluation.task_metrics import TaskMetrics

__all__ = ["AccuracyMatrix", "AnytimeAccuracy", "DomainAccuracy", "Prequential", "Resources",
           "TaskMetrics"]
