"""Bootstrap intervals and paired tests: parity with sacrebleu, calibration, determinism, corrections."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.stats
from sacrebleu.significance import PairedTest, _bootstrap_resample

from aigc_eval.metrics.base import Metric
from aigc_eval.metrics.descriptors import Descriptors
from aigc_eval.metrics.perplexity import Perplexity
from aigc_eval.metrics.rouge import ROUGE
from aigc_eval.metrics.sacrebleu_metrics import BLEU, CHRF, TER
from aigc_eval.stats import (
    PairedResult,
    benjamini_hochberg,
    bootstrap_interval,
    holm,
    paired_approximate_randomization,
    paired_bootstrap,
)

WORDS = [f"w{i}" for i in range(60)]
SACRE_METRICS = [BLEU, CHRF, TER]


def corpus(n: int, noise_a: float, noise_b: float, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """References and two systems that replace each reference word with probability noise_a/noise_b."""
    rnd = random.Random(seed)
    refs = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 15))) for _ in range(n)]

    def noisy(ref: str, p: float) -> str:
        return " ".join(w if rnd.random() > p else rnd.choice(WORDS) for w in ref.split())

    return refs, [noisy(r, noise_a) for r in refs], [noisy(r, noise_b) for r in refs]


REFS, HYP_A, HYP_B = corpus(200, 0.30, 0.32)


def score_of(metric: Metric) -> Callable[[np.ndarray], float]:
    output = metric.outputs[0]
    return lambda rows: metric.aggregate(rows)[output].score


def mean_rows(values: np.ndarray) -> np.ndarray:
    """Per-sample scores as additive rows: [score, 1], whose ratio of column sums is the mean."""
    return np.column_stack([values, np.ones(len(values))])


def ratio_of_sums(rows: np.ndarray) -> float:
    return float(rows[:, 0].sum() / rows[:, 1].sum())


def direct_bootstrap(
    per_resample: Callable[[np.ndarray], float], n: int, n_resamples: int, seed: int
) -> np.ndarray:
    """The resampled scores written out directly, from sacrebleu's index matrix."""
    idxs = np.random.default_rng(seed).choice(n, size=(n_resamples, n), replace=True)
    return np.sort([per_resample(i) for i in idxs])


@pytest.mark.parametrize("metric_cls", SACRE_METRICS)
def test_bootstrap_resamples_exactly_as_sacrebleu(
    metric_cls: type[Metric], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With sacrebleu's float32 arithmetic as the aggregate, the interval bounds are identical."""
    monkeypatch.setenv("SACREBLEU_SEED", "777")
    metric = metric_cls()
    stats = metric.sample_stats(HYP_A, [[r] for r in REFS])
    sb_metric = metric._corpus  # type: ignore[attr-defined]
    _, sb_scores = _bootstrap_resample(stats[:, :-1].tolist(), sb_metric, 1000)
    expected = sorted(s.score for s in sb_scores)

    def float32_score(rows: np.ndarray) -> float:
        return float(sb_metric._compute_score_from_stats(rows.sum(0)[:-1].astype(np.float32)).score)

    interval = bootstrap_interval(stats, float32_score, seed=777, additive=True)
    assert (interval.low, interval.high) == (expected[1000 // 40], expected[1000 - 1000 // 40 - 1])
    assert interval.mean == pytest.approx(float(np.mean(np.array(expected, dtype=np.float64))), rel=1e-12)


@pytest.mark.parametrize("metric_cls", SACRE_METRICS)
def test_bootstrap_matches_sacrebleu_confidence(metric_cls: type[Metric]) -> None:
    """Same mean and half-width as ``corpus_score(n_bootstrap=1000)``, up to sacrebleu's float32 rounding."""
    metric = metric_cls()
    stats = metric.sample_stats(HYP_A, [[r] for r in REFS])
    sacre = metric_cls()._corpus.corpus_score(HYP_A, [REFS], n_bootstrap=1000)  # type: ignore[attr-defined]
    interval = bootstrap_interval(stats, score_of(metric), additive=True)
    # sacrebleu divides float32 sums in float32: ~1e-6 on a 0-100 scale; we compute in float64.
    assert interval.mean == pytest.approx(float(sacre._mean), abs=1e-4)
    assert interval.half_width == pytest.approx(float(sacre._ci), abs=1e-4)
    assert interval.low < sacre.score < interval.high
    assert (interval.n_resamples, interval.seed, interval.confidence) == (1000, 12345, 0.95)


@pytest.mark.parametrize("metric_cls", SACRE_METRICS)
@pytest.mark.parametrize(
    ("test_type", "n", "fn"),
    [("ar", 2000, paired_approximate_randomization), ("bs", 1000, paired_bootstrap)],
)
def test_paired_tests_equal_sacrebleu(
    metric_cls: type[Metric], test_type: str, n: int, fn: Callable[..., PairedResult]
) -> None:
    """p-values equal sacrebleu's PairedTest bit for bit (same seed, same trials)."""
    metric = metric_cls()
    refs = [[r] for r in REFS]
    stats_a, stats_b = metric.sample_stats(HYP_A, refs), metric.sample_stats(HYP_B, refs)
    sb_metric = metric_cls()._corpus  # type: ignore[attr-defined]
    _, table = PairedTest(
        [("a", HYP_A), ("b", HYP_B)], {"m": sb_metric}, [REFS], test_type=test_type, n_samples=n
    )()
    baseline, system = next(v for k, v in table.items() if k != "System")
    result = fn(stats_a, stats_b, score_of(metric), n, seed=12345, additive=True)
    assert result.p_value == system.p_value
    assert (result.baseline, result.system) == (baseline.score, system.score)
    assert result.delta == system.score - baseline.score
    assert 0.01 < result.p_value < 1  # the systems are close: a p-value that tests the counting


def test_additive_fast_path_equals_full_rows() -> None:
    """Summing each resample by a matrix product gives the scores that aggregating its rows gives."""
    metric = BLEU()
    refs = [[r] for r in REFS]
    stats_a, stats_b = metric.sample_stats(HYP_A, refs), metric.sample_stats(HYP_B, refs)
    agg = score_of(metric)
    assert bootstrap_interval(stats_a, agg, 100, seed=3) == bootstrap_interval(
        stats_a, agg, 100, seed=3, additive=True
    )
    for fn in (paired_approximate_randomization, paired_bootstrap):
        assert fn(stats_a, stats_b, agg, 100, seed=3) == fn(stats_a, stats_b, agg, 100, seed=3, additive=True)


def test_integer_and_float_rows_agree() -> None:
    """Integer rows (float64 BLAS shortcut) and the same values as floats (sacrebleu's products) agree."""
    rows = np.random.default_rng(5).integers(0, 20, size=(300, 3))
    other = np.random.default_rng(6).integers(0, 20, size=(300, 3))
    agg = ratio_of_sums
    as_int = paired_approximate_randomization(rows, other, agg, 500, additive=True)
    as_float = paired_approximate_randomization(
        rows.astype(float), other.astype(float), agg, 500, additive=True
    )
    assert as_int == as_float


def test_truly_worse_system_is_significant() -> None:
    refs, good, bad = corpus(300, 0.25, 0.40, seed=1)
    metric = BLEU()
    stats_good = metric.sample_stats(good, [[r] for r in refs])
    stats_bad = metric.sample_stats(bad, [[r] for r in refs])
    agg = score_of(metric)
    ar = paired_approximate_randomization(stats_good, stats_bad, agg, 1000, additive=True)
    bs = paired_bootstrap(stats_good, stats_bad, agg, 1000, additive=True)
    assert ar.delta < 0 and ar.p_value < 0.01
    assert bs.p_value < 0.01
    # Per-sample scores where the system loses 0.1 on 60% of the samples.
    rng = np.random.default_rng(2)
    base = rng.uniform(size=200)
    worse = base - 0.1 * (rng.uniform(size=200) < 0.6) + rng.normal(0, 0.05, size=200)
    result = paired_approximate_randomization(
        mean_rows(base), mean_rows(worse), ratio_of_sums, 1000, additive=True
    )
    assert result.p_value < 0.01


def test_false_positive_rate_near_alpha() -> None:
    """Two systems from one distribution: AR rejects at about alpha; sacrebleu's BS at about 2 alpha.

    sacrebleu's paired bootstrap counts one tail of the centred |differences| against |observed|, so
    its rejections run near twice alpha (0.11 at alpha 0.05 over 1000 seeds); it is kept for parity.
    """
    n_seeds, alpha = 200, 0.05
    rejected_ar = rejected_bs = 0
    for seed in range(n_seeds):
        scores = np.random.default_rng(1000 + seed).normal(size=(2, 50))
        a, b = mean_rows(scores[0]), mean_rows(scores[1])
        ar = paired_approximate_randomization(a, b, ratio_of_sums, 200, seed=seed, additive=True)
        bs = paired_bootstrap(a, b, ratio_of_sums, 200, seed=seed, additive=True)
        rejected_ar += ar.p_value < alpha
        rejected_bs += bs.p_value < alpha
    assert rejected_ar / n_seeds <= 0.10
    assert rejected_bs / n_seeds <= 0.20


def test_percentile_positions() -> None:
    """95% takes sorted[n // 40] and sorted[n - n // 40 - 1]; other levels floor(n * (1 - c) / 2)."""
    values = np.random.default_rng(0).normal(size=60)
    rows = mean_rows(values)
    for n_resamples, confidence in [
        (1000, 0.95),
        (999, 0.95),
        (39, 0.95),
        (41, 0.95),
        (500, 0.9),
        (200, 0.99),
    ]:
        expected = direct_bootstrap(lambda i: values[i].sum() / len(i), 60, n_resamples, 12345)
        lower = {0.95: n_resamples // 40, 0.9: n_resamples // 20, 0.99: n_resamples // 200}[confidence]
        interval = bootstrap_interval(rows, ratio_of_sums, n_resamples, confidence, additive=True)
        assert interval.low == pytest.approx(expected[lower], rel=1e-12)
        assert interval.high == pytest.approx(expected[n_resamples - lower - 1], rel=1e-12)


def test_perplexity_interval_is_token_weighted() -> None:
    """Interval of exp(sum NLL / sum tokens) over resampled (nll, tokens, bytes) rows."""
    rng = np.random.default_rng(4)
    tokens = rng.integers(1, 80, size=150).astype(float)
    nll = tokens * rng.uniform(1.5, 4.0, size=150)
    stats = np.column_stack([nll, tokens, tokens * 4])
    metric = Perplexity()  # a pure metric: its rows came from a scorer, the aggregate needs none
    expected = direct_bootstrap(lambda i: math.exp(nll[i].sum() / tokens[i].sum()), 150, 300, 9)
    for additive in (False, True):
        interval = bootstrap_interval(stats, score_of(metric), 300, seed=9, additive=additive)
        assert interval.low == pytest.approx(expected[300 // 40], rel=1e-12)
        assert interval.high == pytest.approx(expected[300 - 300 // 40 - 1], rel=1e-12)
        assert interval.mean == pytest.approx(expected.mean(), rel=1e-12)


def test_rouge_interval_is_mean_f() -> None:
    refs, hyps, _ = corpus(40, 0.3, 0.3, seed=3)
    metric = ROUGE(ROUGE.Options(rouge_types=("rouge1",)))
    stats = metric.sample_stats(hyps, [[r] for r in refs])
    f = stats[:, 2]
    expected = direct_bootstrap(lambda i: float(np.mean(f[i])), 40, 200, 12345)
    interval = bootstrap_interval(stats, score_of(metric), 200)
    assert interval.low == pytest.approx(expected[5], rel=1e-12)
    assert interval.high == pytest.approx(expected[194], rel=1e-12)


def test_object_rows_descriptors() -> None:
    """Rows holding n-gram tuples resample and swap like numbers; they cannot be summed."""
    metric = Descriptors()
    stats_a = metric.sample_stats(HYP_A[:60], [])
    stats_b = metric.sample_stats(HYP_B[:60], [])

    def distinct1(rows: np.ndarray) -> float:
        return metric.aggregate(rows)["distinct1"].score

    interval = bootstrap_interval(stats_a, distinct1, 100)
    assert interval.low <= interval.mean <= interval.high
    result = paired_approximate_randomization(stats_a, stats_b, distinct1, 100)
    assert result.baseline == metric.aggregate(stats_a)["distinct1"].score
    assert 0 < result.p_value <= 1
    with pytest.raises(ValueError, match="numeric"):
        bootstrap_interval(stats_a, distinct1, 10, additive=True)


def test_bool_rows_sum_as_counts() -> None:
    flags = np.random.default_rng(1).uniform(size=(80, 1)) < 0.3
    rows = np.column_stack([flags, np.ones_like(flags)])
    assert bootstrap_interval(rows, ratio_of_sums, 50, additive=True) == bootstrap_interval(
        rows, ratio_of_sums, 50
    )


def test_invalid_inputs() -> None:
    rows = mean_rows(np.arange(10.0))
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(rows, rows[:9], ratio_of_sums)
    with pytest.raises(ValueError, match="no samples"):
        bootstrap_interval(rows[:0], ratio_of_sums)
    with pytest.raises(ValueError, match=r"\[n_samples, k\]"):
        bootstrap_interval(np.arange(10.0), ratio_of_sums)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(rows, ratio_of_sums, confidence=95)
    with pytest.raises(ValueError, match="n_trials"):
        paired_approximate_randomization(rows, rows, ratio_of_sums, 0)


def test_identical_systems_keep_sacrebleu_strict_count() -> None:
    """sacrebleu (after multeval) counts only differences strictly above the observed one, so a system
    against itself gets the smallest p-value, 1 / (n + 1), as sacrebleu's PairedTest reports; callers
    must read significance together with a nonzero delta."""
    rows = mean_rows(np.random.default_rng(0).normal(size=30))
    for fn in (paired_approximate_randomization, paired_bootstrap):
        result = fn(rows, rows, ratio_of_sums, 100)
        assert result.delta == 0 and result.p_value == 1 / 101


_DETERMINISM_SCRIPT = """
import numpy as np
from aigc_eval.stats import bootstrap_interval, paired_approximate_randomization, paired_bootstrap
rng = np.random.default_rng(11)
a, b = rng.integers(0, 9, size=(2, 120, 3))
fa, fb = rng.normal(size=(2, 120, 2))
agg = lambda rows: float(rows[:, 0].sum() / (1 + abs(rows[:, 1].sum())))
print(repr([
    bootstrap_interval(a, agg, 300, seed=5, additive=True),
    bootstrap_interval(fa, agg, 300, seed=5),
    paired_approximate_randomization(a, b, agg, 500, seed=5, additive=True),
    paired_approximate_randomization(fa, fb, agg, 500, seed=5, additive=True),
    paired_bootstrap(fa, fb, agg, 300, seed=5),
]))
"""


def test_deterministic_across_calls_and_processes() -> None:
    namespace: dict[str, Any] = {}
    printed: list[str] = []
    namespace["print"] = printed.append
    exec(_DETERMINISM_SCRIPT, namespace)
    exec(_DETERMINISM_SCRIPT, namespace)
    assert printed[0] == printed[1]
    child = subprocess.run(
        [sys.executable, "-c", _DETERMINISM_SCRIPT], capture_output=True, text=True, check=True
    )
    assert child.stdout.strip() == printed[0]
    assert printed[0].count("Interval(") == 2 and printed[0].count("PairedResult(") == 3


def test_holm_hand_computed() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.02, 0.02, 0.5]) == pytest.approx([0.06, 0.06, 0.5])
    assert holm([0.3]) == [0.3]
    assert holm([]) == []


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for p in [rng.uniform(size=20), rng.uniform(0, 0.1, size=7), np.array([0.01, 0.01, 0.04, 0.04, 1.0])]:
        expected = scipy.stats.false_discovery_control(p, method="bh")
        assert benjamini_hochberg(p.tolist()) == pytest.approx(expected.tolist(), rel=1e-12)
    assert benjamini_hochberg([]) == []


def test_corrections_reject_bad_p_values() -> None:
    for fn in (holm, benjamini_hochberg):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn([0.1, 1.5])
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn([float("nan")])
