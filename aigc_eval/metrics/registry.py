"""Metrics by name, so suites and the CLI can refer to them as strings.

Built-in metrics register themselves (``@metrics.register(name)``) when their module is imported;
a third-party package adds one through an entry point in the ``aigc_eval.metrics`` group.
"""

from __future__ import annotations

from typing import Any

from aigc_eval.metrics.base import Metric, MetricContext
from aigc_eval.registry import Registry

# Built in by aigc_eval.metrics.image.metrics (kept here so listing names imports no image code).
IMAGE_METRIC_NAMES = ("fid", "kid", "is", "precision", "recall", "density", "coverage", "cmmd", "fid_inf")

metrics: Registry[type[Metric]] = Registry(
    "metric",
    "aigc_eval.metrics",
    builtins={
        "bleu": "aigc_eval.metrics.sacrebleu_metrics",
        "chrf": "aigc_eval.metrics.sacrebleu_metrics",
        "chrf++": "aigc_eval.metrics.sacrebleu_metrics",
        "ter": "aigc_eval.metrics.sacrebleu_metrics",
        "rouge": "aigc_eval.metrics.rouge",
        "descriptors": "aigc_eval.metrics.descriptors",
        "perplexity": "aigc_eval.metrics.perplexity",
        "evaluate": "aigc_eval.metrics.evaluate_module",
        **{name: "aigc_eval.metrics.image.metrics" for name in IMAGE_METRIC_NAMES},
    },
)


def metric_names() -> list[str]:
    return metrics.names()


def metric_class(name: str) -> type[Metric]:
    return metrics.get(name)


def options_model(name: str) -> Any:
    return metric_class(name).Options


def output_names(name: str, options: dict[str, Any] | None = None) -> tuple[str, ...] | None:
    """The score names an entry produces, known from its options without computing anything."""
    cls = metric_class(name)
    return cls.output_names(cls.Options.model_validate(options or {}))


def build_metric(
    name: str,
    options: dict[str, Any] | None = None,
    lang: str | None = None,
    context: MetricContext | None = None,
) -> Metric:
    """A metric from its name and options (validated by its ``Options`` model)."""
    cls = metric_class(name)
    return cls(cls.Options.model_validate(options or {}), lang=lang, context=context)  # type: ignore[call-arg]
