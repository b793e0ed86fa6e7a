"""Figures and a self-contained HTML report of one run or of a benchmark grid."""

from lifelong.report.data import Cell, Grid, load_grid, load_run, mean_ci
from lifelong.report.html import grid_report
from lifelong.report.plots import plot_grid, plot_path, plot_run

__all__ = ["Cell", "Grid", "load_grid", "load_run", "mean_ci", "grid_report", "plot_grid",
           "plot_path", "plot_run"]
