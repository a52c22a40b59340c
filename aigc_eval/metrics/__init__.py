"""Text metrics: pure functions of predictions and references, looked up by name."""

from aigc_eval.metrics.base import Metric, Score
from aigc_eval.metrics.registry import build_metric, metric_names

__all__ = ["Metric", "Score", "build_metric", "metric_names"]
