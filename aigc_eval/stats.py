"""Bootstrap intervals, paired significance tests and multiple-comparison correction over stats rows.

Every function here sees only rows of per-sample statistics (``[n_samples, k]``, numeric or
object dtype) and an ``aggregate`` callable ``rows -> float`` (usually
``lambda rows: metric.aggregate(rows)[output].score``), so it is written once for every metric.
Resamples are evaluated as stacks of row sets (``[m, n, k]``, in chunks that bound the memory) by an
optional ``stacked`` callable ``stack -> m values`` (``Metric.stacked_values``), which vectorises
what would be thousands of ``aggregate`` calls; without it, ``aggregate`` is called once per set.

The resampling replicates sacrebleu's ``significance.py`` call for call (the same RNG draws,
index matrices, percentile positions and p-value definitions), so for BLEU/chrF/TER with the
same seed the p-values equal sacrebleu's ``--paired-ar``/``--paired-bs`` and the intervals equal
its ``--confidence`` up to the float32 rounding sacrebleu applies to resampled sums (about 1e-6
on a 0-100 scale; here they are float64). Seeds are explicit parameters (default 12345, sacrebleu's
``SACREBLEU_SEED`` default) and only ``np.random.default_rng(seed)`` is used, never global state.

``additive=True`` declares that the aggregate depends on the rows only through their column sums
(BLEU, chrF, TER, perplexity; a mean becomes additive with a column of ones and
``sum(x) / sum(ones)``). Each resample is then summed by one matrix product and the aggregate is
called on that single summed row, which is how sacrebleu itself runs its tests, and is much
faster than aggregating every resample's full rows.

Unpaired rows (``Metric.paired = False``: generated images, whose rows in two runs are different
draws, not the same sample) get ``permutation_test`` and ``two_sample_bootstrap`` instead. Both see
only the two sets of rows and a ``pooled(pool) -> statistic(idx) -> {output: value}`` factory (the
metric's ``pooled``), which evaluates the metric on index sets into the pooled rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

Aggregate = Callable[[np.ndarray], float]
# The aggregate of each row set of a stack ``[m, n, k]``, as ``m`` values.
StackedAggregate = Callable[[np.ndarray], np.ndarray]
# ``pooled(pool)`` -> ``statistic(idx)``: each output's value on the rows ``pool[idx]``.
PooledStatistic = Callable[[np.ndarray], Callable[[np.ndarray], dict[str, float]]]

DEFAULT_SEED = 12345
_TRIAL_CHUNK = 1024
_STACK_CELLS = 1 << 22  # cells per evaluated stack chunk: 32 MiB of float64


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval of one aggregate; ``mean`` is that of the resampled scores."""

    low: float
    high: float
    mean: float
    half_width: float
    confidence: float
    n_resamples: int
    seed: int
    method: str = "percentile-bootstrap"


@dataclass(frozen=True)
class PairedResult:
    """A paired test of ``system`` against ``baseline``; ``delta`` is system minus baseline.

    ``n`` is the number of randomization trials or bootstrap resamples; the p-value is two-sided.
    """

    baseline: float
    system: float
    delta: float
    p_value: float
    method: str
    n: int
    seed: int


def bootstrap_interval(
    stats: np.ndarray,
    aggregate: Aggregate,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
    additive: bool = False,
    stacked: StackedAggregate | None = None,
) -> Interval:
    """Percentile bootstrap over rows, as sacrebleu's ``_bootstrap_resample`` + ``estimate_ci``.

    At 95% the bounds are ``sorted[n // 40]`` and ``sorted[n - n // 40 - 1]`` exactly as sacrebleu;
    other confidences use ``floor(n * (1 - confidence) / 2)`` in exact fractions.
    """
    rows = _rows(stats, "stats")
    _check_count(n_resamples, "n_resamples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    rng = np.random.default_rng(seed)
    idxs = rng.choice(len(rows), size=(n_resamples, len(rows)), replace=True)
    scores = np.sort(_resampled_scores(rows, idxs, _evaluator(aggregate, stacked), additive))
    lower = math.floor(n_resamples * (1 - Fraction(str(confidence))) / 2)
    low, high = float(scores[lower]), float(scores[n_resamples - lower - 1])
    return Interval(
        low=low,
        high=high,
        mean=float(scores.mean()),
        half_width=0.5 * (high - low),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )


def paired_approximate_randomization(
    stats_baseline: np.ndarray,
    stats_system: np.ndarray,
    aggregate: Aggregate,
    n_trials: int = 10000,
    seed: int = DEFAULT_SEED,
    additive: bool = False,
    count_ties: bool = False,
    stacked: StackedAggregate | None = None,
) -> PairedResult:
    """Two-sided paired approximate randomization, as sacrebleu's ``_paired_ar_test``.

    Each trial swaps every sample's two rows with probability 1/2; the p-value counts trials whose
    absolute score difference exceeds the observed one: ``(c + 1) / (n_trials + 1)``.
    ``count_ties`` also counts trials that equal it (Riezler & Maxwell's >=, within 1e-9 relative):
    with sacrebleu's strict count, a rerun differing in a single sample can never be matched by a
    trial and gets the minimum p-value, so a regression gate should count ties.
    """
    baseline, system = _paired_rows(stats_baseline, stats_system)
    _check_count(n_trials, "n_trials")
    rng = np.random.default_rng(seed)
    pos_sel = rng.integers(2, size=(n_trials, len(baseline)), dtype=bool)
    evaluate = _evaluator(aggregate, stacked)
    if additive:
        # As sacrebleu: one summed row per pseudo-system.
        shuf_a, shuf_b = _swapped_sums(pos_sel, _summable(baseline), _summable(system))
        scores_a, scores_b = evaluate(shuf_a[:, None]), evaluate(shuf_b[:, None])
    else:
        scores_a, scores_b = (
            np.concatenate(
                [evaluate(np.where(sel[:, :, None], first, second)) for sel in _chunks(pos_sel, baseline)]
            )
            for first, second in ((baseline, system), (system, baseline))
        )
    bl_score, sys_score = float(aggregate(baseline)), float(aggregate(system))
    observed = abs(bl_score - sys_score)
    if count_ties:
        observed -= 1e-9 * max(abs(bl_score), abs(sys_score), 1e-300)
    p = _p_value(np.abs(scores_a - scores_b), observed)
    return PairedResult(bl_score, sys_score, sys_score - bl_score, p, "paired-ar", n_trials, seed)


def paired_bootstrap(
    stats_baseline: np.ndarray,
    stats_system: np.ndarray,
    aggregate: Aggregate,
    n_resamples: int = 1000,
    seed: int = DEFAULT_SEED,
    additive: bool = False,
    stacked: StackedAggregate | None = None,
) -> PairedResult:
    """Paired bootstrap resampling test, as sacrebleu's ``_paired_bs_test`` (Moses' script).

    Both systems are scored on the same resampled rows; the absolute per-resample differences are
    centred on their mean and the p-value is ``(c + 1) / (n_resamples + 1)`` with ``c`` the count
    above the observed absolute difference (sacrebleu's definition).
    """
    baseline, system = _paired_rows(stats_baseline, stats_system)
    _check_count(n_resamples, "n_resamples")
    rng = np.random.default_rng(seed)
    idxs = rng.choice(len(baseline), size=(n_resamples, len(baseline)), replace=True)
    evaluate = _evaluator(aggregate, stacked)
    scores_bl = _resampled_scores(baseline, idxs, evaluate, additive)
    scores_sys = _resampled_scores(system, idxs, evaluate, additive)
    bl_score, sys_score = float(aggregate(baseline)), float(aggregate(system))
    sample_diffs = np.abs(scores_sys - scores_bl)
    p = _p_value(sample_diffs - sample_diffs.mean(), abs(bl_score - sys_score))
    return PairedResult(bl_score, sys_score, sys_score - bl_score, p, "paired-bs", n_resamples, seed)


@dataclass(frozen=True)
class UnpairedResult:
    """A permutation test of current (rows_b) against baseline (rows_a) on one output: the observed
    ``delta`` (b minus a, of the pooled statistic) and its two-sided p-value over ``n`` reshuffles."""

    delta: float
    p_value: float
    n: int
    seed: int
    method: str = "permutation"


def permutation_test(
    rows_a: np.ndarray, rows_b: np.ndarray, pooled: PooledStatistic, n_trials: int, seed: int = DEFAULT_SEED
) -> dict[str, UnpairedResult]:
    """Two-sided permutation test of b minus a, for every output of the statistic at once.

    Under "both sets are draws from one distribution" the pooled rows are exchangeable: each trial
    reshuffles them (seeded) into two sets of the original sizes and p = (1 + #{|Δ*| ≥ |Δ|}) /
    (n_trials + 1), ties counted within 1e-9 relative. Exact at any sample size, and no set ever
    repeats a row, which k-NN statistics cannot handle. All outputs share the same reshuffles.
    """
    n_a, n_b = len(_rows(rows_a, "rows_a")), len(_rows(rows_b, "rows_b"))
    _check_count(n_trials, "n_trials")
    statistic = pooled(np.concatenate([rows_a, rows_b]))
    base, system = statistic(np.arange(n_a)), statistic(np.arange(n_a, n_a + n_b))
    observed = {name: system[name] - base[name] for name in system}
    extreme = dict.fromkeys(observed, 0)
    rng = np.random.default_rng(seed)
    for _ in range(n_trials):
        order = rng.permutation(n_a + n_b)
        first, second = statistic(order[:n_a]), statistic(order[n_a:])
        for name, delta in observed.items():
            tolerance = 1e-9 * max(abs(delta), 1e-12)
            extreme[name] += abs(second[name] - first[name]) >= abs(delta) - tolerance
    return {
        name: UnpairedResult(delta, (extreme[name] + 1) / (n_trials + 1), n_trials, seed)
        for name, delta in observed.items()
    }


def two_sample_bootstrap(
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    pooled: PooledStatistic,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> dict[str, tuple[float, float]]:
    """Percentile interval (numpy's linear interpolation) of b minus a per output, each set resampled
    with replacement on its own (b's draw first, then a's, per resample)."""
    n_a, n_b = len(_rows(rows_a, "rows_a")), len(_rows(rows_b, "rows_b"))
    _check_count(n_resamples, "n_resamples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    statistic = pooled(np.concatenate([rows_a, rows_b]))
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        second = statistic(rng.integers(n_a, n_a + n_b, n_b))
        first = statistic(rng.integers(0, n_a, n_a))
        for name, value in second.items():
            deltas.setdefault(name, []).append(value - first[name])
    tail = (1 - confidence) / 2 * 100
    intervals = {}
    for name, values in deltas.items():
        low, high = np.percentile(np.array(values), [tail, 100 - tail])
        intervals[name] = (float(low), float(high))
    return intervals


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error), in the input order.

    The i-th smallest p is multiplied by ``m - i + 1``, made non-decreasing and capped at 1.
    """
    p = _p_array(p_values)
    order = np.argsort(p, kind="stable")
    m = len(p)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), in the input order.

    The i-th smallest p is multiplied by ``m / i``, made non-decreasing from the top and capped at 1.
    """
    p = _p_array(p_values)
    order = np.argsort(p, kind="stable")
    m = len(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return adjusted.tolist()


def _evaluator(aggregate: Aggregate, stacked: StackedAggregate | None) -> StackedAggregate:
    """``stacked``, else one ``aggregate`` call per row set of the stack."""
    if stacked is not None:
        return stacked
    return lambda stack: np.array([aggregate(rows) for rows in stack], dtype=np.float64)


def _chunks(selectors: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """``selectors`` (one per resample or trial) in chunks whose stacks of rows hold at most
    ``_STACK_CELLS`` cells (at least one resample each)."""
    per_chunk = max(1, _STACK_CELLS // max(1, rows.size))
    return [selectors[start : start + per_chunk] for start in range(0, len(selectors), per_chunk)]


def _resampled_scores(
    rows: np.ndarray, idxs: np.ndarray, evaluate: StackedAggregate, additive: bool
) -> np.ndarray:
    """The aggregate of every resample (one row of ``idxs`` per resample)."""
    if not additive:
        return np.concatenate([evaluate(rows[chunk]) for chunk in _chunks(idxs, rows)])
    summable = _summable(rows)
    n_resamples, n = idxs.shape
    # How often each row is drawn in each resample; their product with the rows is the resample's sum.
    counts = np.bincount((idxs + n * np.arange(n_resamples)[:, None]).ravel(), minlength=n_resamples * n)
    sums = counts.reshape(n_resamples, n) @ summable
    return evaluate(sums[:, None])


def _swapped_sums(
    pos_sel: np.ndarray, baseline: np.ndarray, system: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Column sums of both pseudo-systems per trial: sacrebleu's ``pos_sel @ bl + neg_sel @ sys`` and mirror.

    Integer rows take one float64 BLAS product over both systems' columns, exact while the sums stay
    below 2**53 and several times faster than numpy's integer matmul; the sums keep the rows' dtype.
    Other rows use sacrebleu's expression as written, so float sums round as in sacrebleu.
    """
    both = np.hstack([baseline, system])
    if np.issubdtype(both.dtype, np.integer) and np.abs(both).sum(dtype=np.float64) < 2**53:
        k = baseline.shape[1]
        as_float = both.astype(np.float64)
        picked = np.empty((len(pos_sel), both.shape[1]), dtype=both.dtype)
        # In chunks of trials, so the float copy of the selector stays small for large test sets.
        for start in range(0, len(pos_sel), _TRIAL_CHUNK):
            chunk = pos_sel[start : start + _TRIAL_CHUNK].astype(np.float64)
            picked[start : start + _TRIAL_CHUNK] = chunk @ as_float
        other = both.sum(axis=0) - picked
        return picked[:, :k] + other[:, k:], other[:, :k] + picked[:, k:]
    neg_sel = ~pos_sel
    return pos_sel @ baseline + neg_sel @ system, neg_sel @ baseline + pos_sel @ system


def _p_value(null_stats: np.ndarray, observed: float) -> float:
    """sacrebleu's ``_compute_p_value``: strictly greater, plus one in numerator and denominator.

    Kept for parity although the strict count gives a system compared with itself the smallest
    p-value, 1 / (n + 1), as sacrebleu and multeval do: read p together with a nonzero delta.
    """
    return (int(np.sum(null_stats > observed)) + 1) / (len(null_stats) + 1)


def _rows(stats: np.ndarray, name: str) -> np.ndarray:
    rows = np.asarray(stats)
    if rows.ndim != 2:
        raise ValueError(
            f"{name} must be rows of per-sample statistics [n_samples, k]; got shape {rows.shape}"
        )
    if len(rows) == 0:
        raise ValueError(f"{name} has no samples")
    return rows


def _paired_rows(stats_baseline: np.ndarray, stats_system: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    baseline, system = _rows(stats_baseline, "stats_baseline"), _rows(stats_system, "stats_system")
    if baseline.shape != system.shape:
        raise ValueError(
            f"paired tests need rows aligned by sample: baseline {baseline.shape} vs system {system.shape}"
        )
    return baseline, system


def _summable(rows: np.ndarray) -> np.ndarray:
    """Rows that matrix products sum as numbers (flags count as 0/1)."""
    if rows.dtype == np.bool_:
        return rows.astype(np.int64)
    if not np.issubdtype(rows.dtype, np.number):
        raise ValueError(f"additive=True needs numeric rows to sum, got dtype {rows.dtype}")
    return rows


def _check_count(n: int, name: str) -> None:
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}")


def _p_array(p_values: Sequence[float]) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    return p
