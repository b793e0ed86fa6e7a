"""Loggers: training and evaluation scalars to TensorBoard, MLflow or a CSV file."""

from lifelong.plugins.logging.csv import CSVLogger
from lifelong.plugins.logging.mlflow import MLflowLogger
from lifelong.plugins.logging.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "MLflowLogger", "TensorBoardLogger"]
