"""Corpus scores with their bootstrap intervals: the step shared by run, score and compare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace

import numpy as np

from aigc_eval.metrics.base import Metric, Score
from aigc_eval.stats import bootstrap_interval


def resample_count(metric: Metric, stats: np.ndarray, n_resamples: int = 1000) -> int:
    """How many re-aggregations ``aggregate_with_intervals`` will run: the total of its progress."""
    if n_resamples == 0 or not metric.resamplable or len(stats) < 2 or _has_own_intervals(metric):
        return 0
    return n_resamples * len(metric.outputs)


def aggregate_with_intervals(
    metric: Metric,
    stats: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 12345,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Score]:
    """``metric.aggregate(stats)`` plus a percentile-bootstrap interval on every output.

    Rows are resampled, never strings re-scored; ``n_resamples=0`` or a metric that cannot be
    re-aggregated cheaply (``resamplable=False``) leaves the interval out; a metric with its own kind
    of interval (``Metric.custom_intervals``: KID's subset std, FID's disjoint draws) gets that
    instead. ``progress(n)`` is told of every finished resample (``resample_count`` gives the
    total), so long bootstraps can show it.
    """
    scores = metric.aggregate(stats)  # first: signatures describe the real data, not a resample
    own = metric.custom_intervals(scores, stats, seed) if n_resamples else None
    if own is not None:
        return own
    if resample_count(metric, stats, n_resamples) == 0:
        return scores
    advance = progress or (lambda _n: None)
    with_intervals = {}
    for name, score in scores.items():

        def aggregate(rows: np.ndarray, name: str = name) -> float:
            advance(1)
            return metric.aggregate(rows)[name].score

        interval = bootstrap_interval(
            stats,
            aggregate,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
            additive=metric.additive,
        )
        signature = f"{score.signature}|bs:{n_resamples}|ci:{confidence:g}|seed:{seed}"
        with_intervals[name] = replace(
            score, signature=signature, interval={"kind": "bootstrap-percentile", **asdict(interval)}
        )
    return with_intervals


def _has_own_intervals(metric: Metric) -> bool:
    return type(metric).custom_intervals is not Metric.custom_intervals
