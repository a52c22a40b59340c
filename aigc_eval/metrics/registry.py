"""Metrics by name, so suites and the CLI can refer to them as strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from aigc_eval.backends.base import Backend
from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric
from aigc_eval.metrics.descriptors import Descriptors
from aigc_eval.metrics.evaluate_module import EvaluateMetric
from aigc_eval.metrics.perplexity import Perplexity
from aigc_eval.metrics.rouge import ROUGE
from aigc_eval.metrics.sacrebleu_metrics import BLEU, CHRF, TER, CHRFPlusPlus

_METRICS: dict[str, type[Metric]] = {
    cls.name: cls for cls in (BLEU, CHRF, CHRFPlusPlus, TER, ROUGE, Descriptors, Perplexity, EvaluateMetric)
}

# Metrics that need a model to score text (the runner supplies it).
MODEL_METRICS = frozenset({Perplexity.name})
# Constructed only with a model or a module at hand; they name their outputs from options alone.
_NEEDS_RESOURCES: frozenset[type[Metric]] = frozenset({Perplexity, EvaluateMetric})


def metric_names() -> list[str]:
    return sorted(_METRICS)


def metric_class(name: str) -> type[Metric]:
    try:
        return _METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r}; known metrics: {', '.join(metric_names())}") from None


def options_model(name: str) -> type[BaseModel]:
    return metric_class(name).Options  # type: ignore[attr-defined]


def output_names(name: str, options: dict[str, Any] | None = None) -> tuple[str, ...] | None:
    """The score names an entry produces, known from its options without computing anything.

    Metrics needing a model or a module say it from their options alone (``output_names``); the
    rest are cheap to construct. None: an evaluate module reporting every key it returns, whose
    names are known only after a compute.
    """
    cls = metric_class(name)
    parsed = options_model(name).model_validate(options or {})
    if cls in _NEEDS_RESOURCES:
        return cls.output_names(parsed)  # type: ignore[attr-defined]
    return tuple(cls(parsed).outputs)  # type: ignore[call-arg]


def build_metric(
    name: str,
    options: dict[str, Any] | None = None,
    lang: str | None = None,
    scorer: Backend | None = None,
    prompts: Sequence[str] | None = None,
) -> Metric:
    """Instantiate a metric from its name and options; model metrics also get the scorer and
    the prompts (to condition on them when asked)."""
    cls = metric_class(name)
    parsed = options_model(name).model_validate(options or {})
    if name in MODEL_METRICS:
        if scorer is None:
            raise UserError(f"metric {name!r} needs a scoring model; give one with --model PATH")
        return cls(scorer, parsed, lang=lang, prompts=prompts)  # type: ignore[call-arg]
    return cls(parsed, lang=lang)  # type: ignore[call-arg]
