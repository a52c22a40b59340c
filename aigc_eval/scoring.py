"""Corpus scores with their bootstrap intervals: the step shared by run, score and compare."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from aigc_eval.metrics.base import Metric, Score
from aigc_eval.stats import bootstrap_interval

# Resamples evaluated per progress update: a vectorised metric runs a stack at once, so progress is
# told in steps (a few milliseconds each) instead of once at the end.
PROGRESS_STEP = 50


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
    total) in steps of ``PROGRESS_STEP``, so long bootstraps can show it.
    """
    scores = metric.aggregate(stats)  # first: signatures describe the real data, not a resample
    own = metric.custom_intervals(scores, stats, seed) if n_resamples else None
    if own is not None:
        return own
    if resample_count(metric, stats, n_resamples) == 0:
        return scores
    outputs = OutputValues(metric)
    with_intervals = {}
    for name, score in scores.items():
        values = outputs.stacked(name)

        def stacked(stack: np.ndarray, values: Callable[[np.ndarray], np.ndarray] = values) -> np.ndarray:
            if progress is None:
                return values(stack)
            parts = []
            for start in range(0, len(stack), PROGRESS_STEP):
                parts.append(values(stack[start : start + PROGRESS_STEP]))
                progress(len(parts[-1]))
            return np.concatenate(parts) if parts else np.zeros(0)

        interval = bootstrap_interval(
            stats,
            outputs.output(name),
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
            additive=metric.additive,
            stacked=stacked,
        )
        signature = f"{score.signature}|bs:{n_resamples}|ci:{confidence:g}|seed:{seed}"
        with_intervals[name] = replace(
            score, signature=signature, interval={"kind": "bootstrap-percentile", **asdict(interval)}
        )
    return with_intervals


def _has_own_intervals(metric: Metric) -> bool:
    return type(metric).custom_intervals is not Metric.custom_intervals


class OutputValues:
    """A metric's output values per distinct row set (``Metric.values``), computed once for all
    outputs, and on stacks of row sets (``Metric.stacked_values``).

    ROUGE and the descriptors report several outputs from one aggregate, and each output's interval
    and test resample the same row sets (same seed), so each set is evaluated once. The key is the
    rows' bytes: for object rows those are the cells' addresses, equal only when every cell is
    the very same object, so equal keys always mean equal rows.
    """

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self._memo: dict[tuple[Any, ...], dict[str, float]] = {}

    def __call__(self, rows: np.ndarray) -> dict[str, float]:
        if len(self.metric.outputs) == 1:  # nothing to share: hashing the rows would cost more
            return self.metric.values(rows)
        digest = hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=16).digest()
        key = (rows.shape, rows.dtype.str, digest)
        if key not in self._memo:
            self._memo[key] = self.metric.values(rows)
        return self._memo[key]

    def output(self, name: str) -> Callable[[np.ndarray], float]:
        return lambda rows: self(rows)[name]

    def stacked(self, name: str) -> Callable[[np.ndarray], np.ndarray]:
        if type(self.metric).stacked_values is Metric.stacked_values:  # per set: share each set's values
            return lambda stack: np.array([self(rows)[name] for rows in stack], dtype=np.float64)
        # A vectorised metric's stack is not shared: hashing it would cost about what evaluating does.
        return lambda stack: self.metric.stacked_values(stack)[name]

    def delta(self, name: str, width: int) -> Callable[[np.ndarray], float]:
        """Current minus baseline on side-by-side rows ``[baseline | current]``: one paired resample."""
        return lambda rows: self(rows[:, width:])[name] - self(rows[:, :width])[name]

    def stacked_delta(self, name: str, width: int) -> Callable[[np.ndarray], np.ndarray]:
        """``delta`` of every set of a stack of side-by-side rows."""
        values = self.stacked(name)
        return lambda stack: values(stack[:, :, width:]) - values(stack[:, :, :width])
