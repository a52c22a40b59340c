"""``Metric.values`` (what bootstrap intervals and paired tests re-evaluate thousands of times) is the
metrics' own ``aggregate`` without signatures: bit for bit, on every row set, so intervals and
p-values did not move when resampling stopped building ``Score`` objects."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from aigc_eval.metrics.registry import build_metric
from aigc_eval.scoring import OutputValues

PREDICTIONS = [
    "the cat sat on the mat",
    "",
    "今天天气很好",
    "a",
    "the quick brown fox jumps over the lazy dog\nand runs",
    "Emma walks past the quiet city",
]
REFERENCES = [
    ["the cat is on the mat", "a cat sat on a mat"],
    ["nothing here"],
    ["今天天气不错"],
    ["a"],
    ["the fast brown fox jumped over a lazy dog\nand ran"],
    ["Emma remembers the quiet city", "the city"],
]


def _aggregated(metric: object, rows: np.ndarray) -> dict[str, float]:
    return {name: score.score for name, score in metric.aggregate(rows).items()}  # type: ignore[attr-defined]


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("bleu", {}),
        ("chrf", {}),
        ("chrf++", {}),
        ("ter", {}),
        ("rouge", {"rouge_types": ["rouge1", "rouge2", "rougeL", "rougeLsum"], "tokenizer": "unicode"}),
        ("rouge", {"use_stemmer": True}),
        ("descriptors", {}),
    ],
)
def test_values_equal_aggregate_on_every_resample(name: str, options: dict[str, object]) -> None:
    metric = build_metric(name, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ROUGE's default tokenizer warns that it drops the Chinese
        rows = metric.sample_stats(PREDICTIONS, REFERENCES)
    rng = np.random.default_rng(3)
    for size in (1, 2, 6, 40, 257):
        resample = rows[rng.integers(0, len(rows), size)]
        assert _same(metric.values(resample), _aggregated(metric, resample))
    shared = OutputValues(metric)
    for output in metric.outputs:
        assert shared.output(output)(rows) == _aggregated(metric, rows)[output]


def test_perplexity_values_equal_aggregate_including_no_tokens() -> None:
    metric = build_metric("perplexity", {})
    rng = np.random.default_rng(4)
    rows = np.column_stack([rng.random(50) * 40, rng.integers(1, 30, 50), rng.integers(1, 200, 50)])
    for resample in (rows, rows[:1], rows[rng.integers(0, 50, 50)], np.zeros((3, 3))):
        assert _same(metric.values(resample), _aggregated(metric, resample))
    assert math.isnan(metric.values(np.zeros((3, 3)))["perplexity"])  # no tokens: undefined, not 1


def _stack_sets(rows: np.ndarray, rng: np.random.Generator, n_sets: int, size: int) -> np.ndarray:
    return rows[rng.integers(0, len(rows), (n_sets, size))]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("bleu", {}),
        ("bleu", {"smooth_method": "add-k"}),
        ("bleu", {"smooth_method": "floor", "smooth_value": 0.1}),
        ("bleu", {"effective_order": True, "tokenize": "zh"}),
        ("chrf", {}),
        ("chrf++", {"eps_smoothing": True}),
        ("ter", {}),
        ("rouge", {"rouge_types": ["rouge1", "rouge2", "rougeL", "rougeLsum"], "tokenizer": "unicode"}),
        ("rouge", {"use_stemmer": True}),
        ("descriptors", {}),
    ],
)
def test_stacked_values_equal_values_of_each_set(name: str, options: dict[str, object]) -> None:
    """What intervals and tests evaluate on stacks of resamples (and, for additive metrics, on stacks
    of summed rows) is ``values`` of each set, bit for bit: vectorising moved no p-value or bound."""
    metric = build_metric(name, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = metric.sample_stats(PREDICTIONS, REFERENCES)
    rng = np.random.default_rng(5)
    stacks = [
        _stack_sets(rows, rng, n_sets, size) for n_sets, size in ((1, 1), (7, 1), (5, 6), (3, 257), (64, 40))
    ]
    if metric.additive:  # summed rows, as resampling hands them over: sums of several rows each
        stacks.append(
            np.stack([rows[rng.integers(0, len(rows), 9)].sum(axis=0) for _ in range(200)])[:, None]
        )
        stacks.append(np.zeros((2, 1, rows.shape[1]), dtype=rows.dtype))  # nothing matched, no length
    for stack in stacks:
        stacked = metric.stacked_values(stack)
        assert stacked.keys() == set(metric.outputs)
        for i, rows_of_set in enumerate(stack):
            expected = metric.values(rows_of_set)
            got = {output: float(values[i]) for output, values in stacked.items()}
            assert _same(got, expected), (stack.shape, i)


def test_perplexity_stacked_values_equal_values_including_no_tokens() -> None:
    metric = build_metric("perplexity", {})
    rng = np.random.default_rng(6)
    rows = np.column_stack([rng.random(50) * 40, rng.integers(0, 30, 50), rng.integers(1, 200, 50)])
    sums = np.stack([rows[rng.integers(0, 50, 20)].sum(axis=0) for _ in range(100)] + [np.zeros(3)])
    for stack in (sums[:, None], rows[rng.integers(0, 50, (10, 30))]):
        stacked = metric.stacked_values(stack)["perplexity"]
        for value, rows_of_set in zip(stacked, stack, strict=True):
            assert _same({"perplexity": float(value)}, metric.values(rows_of_set))
    assert math.isnan(metric.stacked_values(sums[-1:, None])["perplexity"][0])  # no tokens: undefined


def _random_counts(rng: np.random.Generator, rows: int, width: int) -> np.ndarray:
    """Counts from 0 to large, a third of them zero: every branch of sacrebleu's score functions."""
    counts = rng.integers(0, 10 ** rng.integers(1, 7, (rows, width)))
    return np.where(rng.random((rows, width)) < 0.33, 0, counts)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        *(
            ("bleu", {"smooth_method": method, "effective_order": effective, "max_ngram_order": order})
            for method in ("exp", "floor", "add-k", "none")
            for effective in (False, True)
            for order in (1, 2, 4)
        ),
        ("bleu", {"smooth_method": "add-k", "smooth_value": 0.5}),
        ("bleu", {"smooth_method": "floor", "smooth_value": 0.01}),
        *(("chrf", {"beta": beta}) for beta in (0, 1, 2, 3)),
        ("chrf", {"char_order": 1, "word_order": 2}),
        ("chrf++", {"eps_smoothing": True}),
        ("ter", {}),
    ],
)
def test_vectorised_sacrebleu_scores_equal_sacrebleu_on_random_sums(
    name: str, options: dict[str, object]
) -> None:
    """The array form of sacrebleu's score functions against sacrebleu itself, on 3,000 summed rows
    of random counts (zeros in every position, lengths shorter and longer than the references)."""
    metric = build_metric(name, options)
    width = metric.sample_stats(["a b"], [["a b"]]).shape[1]  # statistics plus the reference count
    sums = _random_counts(np.random.default_rng(len(str(options)) + width), 3000, width)
    if name == "ter":
        sums = sums.astype(np.float64) / 3  # TER's averaged reference lengths are fractions
    got = metric.stacked_values(sums[:, None])[metric.outputs[0]]
    compute = metric._corpus._compute_score_from_stats  # type: ignore[attr-defined]
    expected = [float(compute(row).score) for row in sums[:, :-1].tolist()]
    assert [x.hex() for x in got.tolist()] == [x.hex() for x in expected]
