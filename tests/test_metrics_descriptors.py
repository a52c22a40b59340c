"""Descriptors on inputs small enough to count by hand."""

from __future__ import annotations

import numpy as np
import pytest

from aigc_eval.metrics.descriptors import Descriptors


def compute(predictions: list[str]) -> dict:
    metric = Descriptors()
    return metric.aggregate(metric.sample_stats(predictions, [["unused"]] * len(predictions)))


def test_distinct_n_pools_the_corpus() -> None:
    scores = compute(["a a b", "b c"])
    # unigrams a a b b c: 3 distinct of 5; bigrams (a a) (a b) (b c): 3 of 3.
    assert scores["distinct1"].score == 3 / 5
    assert scores["distinct1"].details == {"unique": 3, "total": 5}
    assert scores["distinct2"].score == 1.0


def test_length_statistics() -> None:
    scores = compute(["a a b", "b c", "x y z w v", "q"])
    assert scores["length"].score == (3 + 2 + 5 + 1) / 4
    assert scores["length"].details == {
        "median": 2.5,
        "min": 1.0,
        "max": 5.0,
        "std": pytest.approx(1.479019945),
    }
    assert scores["length"].higher_is_better is None


def test_empty_rate_counts_whitespace_only() -> None:
    scores = compute(["", "   \n", "x", "y."])
    assert scores["empty_rate"].score == 2 / 4
    assert scores["empty_rate"].details == {"empty": 2}
    assert scores["empty_rate"].higher_is_better is False
    assert scores["length"].score == 2 / 4


def test_chinese_counts_characters() -> None:
    scores = compute(["今天天气很好。", "GPT模型"])
    # 今 天 天 气 很 好 + GPT 模 型: 9 tokens, 天 repeated once -> 8 distinct.
    assert scores["length"].score == (6 + 3) / 2
    assert scores["distinct1"].score == 8 / 9
    # bigrams: 今天 天天 天气 气很 很好, GPT模 模型 -> 7 of 7.
    assert scores["distinct2"].score == 1.0


def test_only_empty_predictions_give_zero_distinct() -> None:
    scores = compute(["", " "])
    assert scores["distinct1"].score == 0.0
    assert scores["distinct2"].score == 0.0
    assert scores["empty_rate"].score == 1.0


def test_aggregate_on_resampled_rows() -> None:
    metric = Descriptors()
    stats = metric.sample_stats(["a a b", "b c"], [])
    scores = metric.aggregate(stats[[0, 0]])
    # a a b a a b: 2 distinct of 6 unigrams; (a a) (a b) twice: 2 of 4 bigrams.
    assert scores["distinct1"].score == 2 / 6
    assert scores["distinct2"].score == 2 / 4
    assert scores["length"].score == 3.0


def test_sample_scores() -> None:
    metric = Descriptors()
    stats = metric.sample_stats(["a a b", "", "c"], [])
    assert metric.sample_scores(stats) == {
        "length": [3.0, 0.0, 1.0],
        "empty_rate": [0.0, 1.0, 0.0],
        "distinct1": [2 / 3, 0.0, 1.0],
        "distinct2": [1.0, 0.0, 0.0],
    }


def test_outputs_and_signature() -> None:
    scores = compute(["x"])
    assert tuple(scores) == Descriptors.outputs
    assert {s.signature for s in scores.values()} == {Descriptors().signature(np.zeros((0, 4)))}


def test_no_rows_is_an_error() -> None:
    metric = Descriptors()
    with pytest.raises(ValueError, match="no samples"):
        metric.aggregate(metric.sample_stats([], []))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # vowel signs stay inside their words
        ("สวัสดี", ["ส", "วั", "ส", "ดี"]),  # Thai: one token per grapheme cluster, not one per sentence
        ("Привет, мир!", ["Привет", "мир"]),
        ("今天 good", ["今", "天", "good"]),
    ],
)
def test_words_segment_every_script(text: str, expected: list[str]) -> None:
    from aigc_eval.metrics.tokenize import words

    assert words(text) == expected
