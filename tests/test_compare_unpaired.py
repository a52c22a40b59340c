"""The unpaired path (``Metric.paired = False``, e.g. generated images): the permutation test and the
two-sample bootstrap of ``aigc_eval.stats`` on a toy metric, and compare's generic handling of unpaired
``StoredMetric`` entries (gating, intervals, untestable outputs) through the same code as text."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest
from pydantic import BaseModel

from aigc_eval.config import Intervals, Regression
from aigc_eval.gate import NOT_TESTED, UNPAIRED_TEST
from aigc_eval.gate.metric_tests import Pair, Setting, compare_entries
from aigc_eval.metrics.base import Metric, SampleInputs, Score, StoredMetric
from aigc_eval.stats import permutation_test, two_sample_bootstrap


class ColumnMean(Metric):
    """A toy unpaired metric: the mean of one column of exchangeable rows (one row per 'image')."""

    name: ClassVar[str] = "column_mean"
    description: ClassVar[str] = "Mean of a column."
    paired: ClassVar[bool] = False
    outputs = ("mean", "spread")

    class Options(BaseModel):
        column: int = 0

    def sample_stats(
        self, predictions: Sequence[str], references: object, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        raise NotImplementedError("rows are given directly in these tests")

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        column = stats[:, self.options.column]
        return {
            "mean": Score("mean", float(column.mean()), "toy"),
            "spread": Score("spread", float(column.std()), "toy", higher_is_better=None),
        }

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {}

    def signature(self, stats: np.ndarray) -> str:
        return "toy"


class NoRepeats(ColumnMean):
    """As ColumnMean, but its rows must not be resampled with replacement (like k-NN recall)."""

    bootstrappable: ClassVar[bool] = False


def mean_of(metric: Metric):
    return lambda pool: lambda idx: {"mean": metric.pooled(pool)(idx)["mean"]}


def test_permutation_p_converges_to_the_exact_permutation_p() -> None:
    """With 5 + 5 rows all 252 splits can be enumerated: the seeded Monte Carlo p approaches the exact
    two-sided p, (#splits at least as extreme) / 252, within its binomial error."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, (5, 1)), rng.normal(1.2, 1, (5, 1))
    pool = np.concatenate([a, b])[:, 0]
    observed = abs(b.mean() - a.mean())
    splits = [set(s) for s in itertools.combinations(range(10), 5)]
    extreme = sum(
        abs(pool[[i for i in range(10) if i not in s]].mean() - pool[list(s)].mean()) >= observed - 1e-12
        for s in splits
    )
    exact = extreme / len(splits)
    result = permutation_test(a, b, mean_of(ColumnMean()), 20_000, seed=7)["mean"]
    assert result.delta == pytest.approx(b.mean() - a.mean())
    assert 0.01 < exact < 0.5 and result.p_value == pytest.approx(exact, abs=4 * math.sqrt(exact / 20_000))


def test_permutation_extremes_and_symmetry() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (30, 2)), rng.normal(5, 1, (30, 2))
    metric = ColumnMean()
    far = permutation_test(a, b, metric.pooled, 500, seed=1)
    assert far["mean"].p_value == 1 / 501  # no reshuffle is as extreme as a 5-sigma shift
    same = permutation_test(a, a, metric.pooled, 500, seed=1)
    assert same["mean"].delta == 0 and same["mean"].p_value == 1.0  # every reshuffle ties zero
    assert permutation_test(b, a, metric.pooled, 500, seed=1)["mean"].p_value == far["mean"].p_value
    again = permutation_test(a, b, metric.pooled, 500, seed=1)
    assert again == far and set(far) == {"mean", "spread"}  # all outputs on the same reshuffles


def test_two_sample_bootstrap_covers_the_difference_of_means() -> None:
    """For a difference of means the percentile interval is close to the normal-theory one."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, (400, 1)), rng.normal(0.5, 2, (400, 1))
    low, high = two_sample_bootstrap(a, b, mean_of(ColumnMean()), 2000, 0.9, seed=2)["mean"]
    centre = b.mean() - a.mean()
    half = 1.6449 * math.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 400)
    assert low == pytest.approx(centre - half, abs=0.03) and high == pytest.approx(centre + half, abs=0.03)


def test_two_sample_bootstrap_draws_current_then_baseline() -> None:
    """The RNG contract that keeps compare's image intervals as before: per resample, b's indices are
    drawn first, then a's, and the bounds are numpy percentiles of the deltas."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(0, 1, (7, 1)), rng.normal(1, 1, (9, 1))
    pool = np.concatenate([a, b])[:, 0]
    draws = np.random.default_rng(4)
    deltas = []
    for _ in range(300):
        second = pool[draws.integers(7, 16, 9)].mean()
        deltas.append(second - pool[draws.integers(0, 7, 7)].mean())
    expected = tuple(np.percentile(deltas, [2.5, 97.5]))
    assert two_sample_bootstrap(a, b, mean_of(ColumnMean()), 300, 0.95, seed=4)["mean"] == expected


def test_unpaired_inputs_are_checked() -> None:
    rows = np.ones((4, 1))
    with pytest.raises(ValueError, match="rows_a has no samples"):
        permutation_test(np.ones((0, 1)), rows, ColumnMean().pooled, 10)
    with pytest.raises(ValueError, match="n_trials must be at least 1"):
        permutation_test(rows, rows, ColumnMean().pooled, 0)
    with pytest.raises(ValueError, match="confidence"):
        two_sample_bootstrap(rows, rows, ColumnMean().pooled, 10, confidence=1.5)


def _pair(metric: Metric, a: np.ndarray, b: np.ndarray) -> Pair:
    scores = [{k: s.to_record() for k, s in metric.aggregate(rows).items()} for rows in (a, b)]
    return Pair("base", "cur", "shapes", scores[0], scores[1])


def test_compare_tests_unpaired_entries_by_permutation() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (40, 1)), rng.normal(1.5, 1, (40, 1))
    setting = Setting(Regression(n_trials=300), 300, Intervals(n_resamples=200))
    found, notes = compare_entries(
        _pair(ColumnMean(), a, b), [StoredMetric(ColumnMean(), a)], [StoredMetric(ColumnMean(), b)], setting
    )
    mean = next(e for e in found if e.metric == "mean")
    assert notes == [] and [e.metric for e in found] == ["mean", "spread"]
    assert mean.p_value == permutation_test(a, b, ColumnMean().pooled, 300, 12345)["mean"].p_value == 1 / 301
    assert mean.delta == pytest.approx(b.mean() - a.mean()) and mean.n == 40
    assert (mean.ci_low, mean.ci_high) == two_sample_bootstrap(a, b, ColumnMean().pooled, 200, 0.95, 12345)[
        "mean"
    ]
    assert mean.method == f"{UNPAIRED_TEST} (40 + 40 generated images)" and mean.ci_confidence == 0.95


def test_unpaired_entries_without_resampling_or_rows_say_why() -> None:
    """No bootstrap for a metric whose rows cannot repeat (the permutation test still runs); an output a
    side cannot test is 'not tested' with its reason; an ungated output still shows its interval."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, (20, 1)), rng.normal(0, 1, (20, 1))
    rules = Regression(n_trials=100, rules=[{"metric": "mean"}])
    setting = Setting(rules, 100, Intervals(n_resamples=100))
    reason = "the generated side is mean/covariance statistics only, without per-image features"
    found, _ = compare_entries(
        _pair(NoRepeats(), a, b),
        [StoredMetric(NoRepeats(), a)],
        [StoredMetric(NoRepeats(), b, unavailable={"spread": reason})],
        setting,
    )
    mean, spread = found
    assert mean.p_value is not None and mean.ci_low is None and mean.note == ""
    assert spread.verdict == NOT_TESTED and spread.note == reason and spread.p_value is None
    ungated, _ = compare_entries(
        _pair(ColumnMean(), a, b), [StoredMetric(ColumnMean(), a)], [StoredMetric(ColumnMean(), b)], setting
    )
    assert ungated[1].p_value is None and ungated[1].ci_low is not None
    assert ungated[1].note == "no regression rule matches this metric"
