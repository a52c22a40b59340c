"""One row pair × task: every output of every metric entry both runs computed the same way, tested.

Each entry is a ``StoredMetric`` (a metric rebuilt from the run folder, with its rows); text and image
metrics go through the same code, and only the test depends on the metric's ``paired`` flag:

* paired rows (text: row i of both runs is the same sample): the paired approximate randomization or
  paired bootstrap test of ``aigc_eval.stats``, and a paired bootstrap interval of the delta;
* unpaired rows (generated images: two runs' images are different draws): a seeded two-sided
  permutation test over the pooled rows, and a two-sample bootstrap interval of the delta, both through
  the metric's ``pooled`` statistic; no interval when the metric's rows cannot be resampled with
  replacement (``bootstrappable = False``: k-NN recall and coverage on sets with repeats mean nothing).

Reported values and signatures are the ones the run recorded. An output that a side cannot test
(``StoredMetric.unavailable``) is "not tested" with that reason.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from aigc_eval.config import Intervals, Regression
from aigc_eval.gate.model import NOT_TESTED, UNPAIRED_TEST, MetricComparison
from aigc_eval.gate.rules import rule_for
from aigc_eval.gate.runs import entry_key
from aigc_eval.metrics.base import Metric, StoredMetric
from aigc_eval.record import ScoreRecord
from aigc_eval.scoring import OutputValues
from aigc_eval.stats import (
    bootstrap_interval,
    paired_approximate_randomization,
    paired_bootstrap,
    permutation_test,
    two_sample_bootstrap,
)
from aigc_eval.threads import blas_threads_for

DEFAULT_TRIALS = {"ar": 10000, "bootstrap": 1000}


@dataclass(frozen=True)
class Setting:
    """What every test of one comparison shares."""

    rules: Regression
    n_trials: int
    intervals: Intervals


@dataclass(frozen=True)
class Pair:
    """One row pair on one task, with both runs' recorded scores."""

    base_model: str
    cur_model: str
    task: str
    base_scores: dict[str, ScoreRecord]
    cur_scores: dict[str, ScoreRecord]


@dataclass
class _Tested:
    """The test's outcome for one output: p-value (None: not gated), interval, and how it was tested."""

    p_value: float | None
    ci: tuple[float, float, float] | None  # low, high, confidence
    method: str = ""


def compare_entries(
    pair: Pair, base_stored: list[StoredMetric], cur_stored: list[StoredMetric], setting: Setting
) -> tuple[list[MetricComparison], list[str]]:
    """Every output both runs recorded, tested where both sides rebuilt the same metric entry."""
    base_by_key = {entry_key(s): s for s in base_stored}
    found: list[MetricComparison] = []
    claimed: set[str] = set()
    unresampled: list[str] = []
    for cur in cur_stored:
        base = base_by_key.get(entry_key(cur))
        if base is None:
            continue
        metric = cur.metric
        if metric.paired and not metric.resamplable:
            unresampled.append(metric.name)  # re-aggregating thousands of trials is unreasonably slow
            continue
        names = [
            n for n in metric.outputs if n not in claimed and n in pair.base_scores and n in pair.cur_scores
        ]
        claimed.update(names)
        reasons = {n: base.unavailable.get(n) or cur.unavailable.get(n) for n in names}
        testable = {
            n: rule_for(setting.rules.rules, pair.task, n, metric.name) for n in names if not reasons[n]
        }
        tested = (_paired if metric.paired else _unpaired)(base, cur, testable, setting)
        for name in names:
            outcome = reasons[name] or tested[name]
            if isinstance(outcome, str):
                found.append(_untested(pair, name, outcome))
            else:
                found.append(_entry(pair, name, metric, testable[name], outcome, len(cur.rows), setting))
    for name in (n for n in pair.cur_scores if n in pair.base_scores and n not in claimed):
        reason = (
            f"{', '.join(sorted(set(unresampled)))} cannot be resampled, so it is not tested"
            if unresampled
            else "the metric's options or language differ between the runs"
        )
        found.append(_untested(pair, name, reason))
    notes = [
        f"{pair.task}: {name} is only in the {'current' if name in pair.cur_scores else 'baseline'} run "
        f"({pair.cur_model})"
        for name in sorted(set(pair.cur_scores) ^ set(pair.base_scores))
    ]
    return found, notes


def _paired(
    base: StoredMetric, cur: StoredMetric, testable: dict[str, Any], setting: Setting
) -> dict[str, _Tested | str]:
    """The paired test (gated outputs only) and the paired bootstrap interval of each output's delta."""
    rules, intervals = setting.rules, setting.intervals
    rows_b, rows_c, metric = base.rows, cur.rows, cur.metric
    outputs = OutputValues(metric)
    paired_test = (
        functools.partial(paired_approximate_randomization, count_ties=rules.ties == "count")
        if rules.test == "ar"
        else paired_bootstrap
    )
    tested: dict[str, _Tested | str] = {}
    for name, rule in testable.items():
        p_value = None
        if rule is not None:
            p_value = paired_test(
                rows_b,
                rows_c,
                outputs.output(name),
                setting.n_trials,
                rules.seed,
                metric.additive,
                stacked=outputs.stacked(name),
            ).p_value
        ci = None
        if intervals.n_resamples > 0 and len(rows_b) > 1:
            interval = bootstrap_interval(
                np.hstack([rows_b, rows_c]),
                outputs.delta(name, rows_b.shape[1]),
                intervals.n_resamples,
                intervals.confidence,
                intervals.seed,
                metric.additive,
                stacked=outputs.stacked_delta(name, rows_b.shape[1]),
            )
            ci = (interval.low, interval.high, interval.confidence)
        tested[name] = _Tested(p_value, ci)
    return tested


def _unpaired(
    base: StoredMetric, cur: StoredMetric, testable: dict[str, Any], setting: Setting
) -> dict[str, _Tested | str]:
    """The permutation test and two-sample bootstrap over the pooled rows, all outputs at once.

    The current side's metric evaluates the pool (it holds the reference the run scored against). A
    ``ValueError`` from the metric's ``pooled`` (e.g. a pool too large for its in-memory distances)
    makes its outputs "not tested" with that message.
    """
    if not testable:
        return {}
    intervals, metric = setting.intervals, cur.metric
    method = f"{UNPAIRED_TEST} ({len(base.rows)} + {len(cur.rows)} generated images)"
    width = max(len(base.rows), len(cur.rows))
    try:
        with blas_threads_for(min(width, cur.rows.shape[1]) if cur.rows.ndim == 2 else width):
            p_values = {}
            if any(rule is not None for rule in testable.values()):
                results = permutation_test(
                    base.rows, cur.rows, metric.pooled, setting.n_trials, setting.rules.seed
                )
                p_values = {name: result.p_value for name, result in results.items()}
            bounds: dict[str, tuple[float, float]] = {}
            if intervals.n_resamples > 0 and metric.bootstrappable:
                bounds = two_sample_bootstrap(
                    base.rows,
                    cur.rows,
                    metric.pooled,
                    intervals.n_resamples,
                    intervals.confidence,
                    intervals.seed,
                )
    except ValueError as error:
        return dict.fromkeys(testable, str(error))
    tested: dict[str, _Tested | str] = {}
    for name, rule in testable.items():
        ci = (*bounds[name], intervals.confidence) if name in bounds else None
        tested[name] = _Tested(p_values[name] if rule is not None else None, ci, method)
    return tested


def _entry(
    pair: Pair, name: str, metric: Metric, rule: Any, outcome: _Tested, n: int, setting: Setting
) -> MetricComparison:
    base_score, cur_score = pair.base_scores[name], pair.cur_scores[name]
    direction = cur_score.higher_is_better
    if rule is not None and rule.higher_is_better is not None:
        direction = rule.higher_is_better
    baseline_value, current_value = base_score.value, cur_score.value
    threshold = 0.0
    if rule is not None:
        threshold = rule.min_delta * abs(baseline_value) if rule.relative else rule.min_delta
    ci = outcome.ci
    return MetricComparison(
        baseline_model=pair.base_model,
        current_model=pair.cur_model,
        task=pair.task,
        metric=name,
        metric_name=metric.name,
        n=n,
        higher_is_better=direction,
        baseline=baseline_value,
        current=current_value,
        delta=current_value - baseline_value,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        ci_confidence=ci[2] if ci else None,
        p_value=outcome.p_value,
        p_corrected=None,
        alpha=(rule.alpha if rule is not None and rule.alpha is not None else setting.rules.alpha),
        threshold=threshold,
        verdict=NOT_TESTED,
        baseline_signature=base_score.signature,
        current_signature=cur_score.signature,
        note="" if rule is not None else "no regression rule matches this metric",
        method=outcome.method,
    )


def _untested(pair: Pair, name: str, note: str) -> MetricComparison:
    """An output reported from results.json alone: not tested, with the reason."""
    base_score, cur_score = pair.base_scores[name], pair.cur_scores[name]
    return MetricComparison(
        baseline_model=pair.base_model,
        current_model=pair.cur_model,
        task=pair.task,
        metric=name,
        metric_name=name,
        n=0,
        higher_is_better=cur_score.higher_is_better,
        baseline=base_score.value,
        current=cur_score.value,
        delta=cur_score.value - base_score.value,
        ci_low=None,
        ci_high=None,
        ci_confidence=None,
        p_value=None,
        p_corrected=None,
        alpha=math.nan,
        threshold=math.nan,
        verdict=NOT_TESTED,
        baseline_signature=base_score.signature,
        current_signature=cur_score.signature,
        note=note,
    )
