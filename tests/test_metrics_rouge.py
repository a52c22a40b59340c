"""ROUGE must equal rouge-score's RougeScorer.score_multi per sample and on the mean."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import nltk
import numpy as np
import pytest
from rouge_score.rouge_scorer import RougeScorer

from aigc_eval.errors import UserError
from aigc_eval.metrics.rouge import ROUGE
from aigc_eval.metrics.tokenize import CJKTokenizer

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

ENGLISH = (
    [
        "The cat sat on the mat.\nIt was happy.",
        "",
        "hello",
        "Running quickly, the runners ran home",
        "A quick brown fox jumps over the lazy dog",
    ],
    [
        ["The cat is on the mat.\nThe cat was happy."],
        ["Nothing here."],
        ["hello"],
        ["The runner runs home quickly", "Runners were running home"],
        ["The quick brown fox jumped over the lazy dog", "a fast brown fox", "lazy dogs"],
    ],
)
CHINESE = (
    ["今天天气很好", "我喜欢吃苹果。", "", "好"],
    [["今天天气不错"], ["我爱吃苹果。", "苹果好吃"], ["没有"], ["好"]],
)
MIXED = (
    ["我用GPT-4写代码", "The model 很好", "OK"],
    [["我用 GPT-4 写代码"], ["这个 model 很好"], ["ok"]],
)


def expected(
    scorer: RougeScorer, predictions: list[str], references: list[list[str]]
) -> dict[str, np.ndarray]:
    """[n, 3] arrays of (precision, recall, F) per rouge type, straight from rouge-score."""
    best = [scorer.score_multi(refs, p) for p, refs in zip(predictions, references, strict=True)]
    return {t: np.array([[s[t].precision, s[t].recall, s[t].fmeasure] for s in best]) for t in TYPES}


def check(scores: dict, per_sample: dict, reference: dict[str, np.ndarray]) -> None:
    for t in TYPES:
        assert per_sample[t] == reference[t][:, 2].tolist()
        assert scores[t].score == np.mean(reference[t][:, 2])
        assert scores[t].details == {
            "precision": np.mean(reference[t][:, 0]),
            "recall": np.mean(reference[t][:, 1]),
        }


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_english_equals_rouge_score_exactly(use_stemmer: bool) -> None:
    metric = ROUGE(ROUGE.Options(use_stemmer=use_stemmer))
    stats = metric.sample_stats(*ENGLISH)
    scores = metric.aggregate(stats)
    check(
        scores, metric.sample_scores(stats), expected(RougeScorer(TYPES, use_stemmer=use_stemmer), *ENGLISH)
    )
    stem = "yes" if use_stemmer else "no"
    assert (
        scores["rouge1"].signature
        == f"rouge-score:{version('rouge-score')}|tok:default|stem:{stem}|nrefs:maxvar|agg:mean-f"
    )


@pytest.mark.parametrize("data", [CHINESE, MIXED], ids=["chinese", "mixed"])
def test_cjk_text_equals_rouge_score_with_the_cjk_tokenizer(data: tuple) -> None:
    metric = ROUGE()
    stats = metric.sample_stats(*data)
    scores = metric.aggregate(stats)
    check(scores, metric.sample_scores(stats), expected(RougeScorer(TYPES, tokenizer=CJKTokenizer()), *data))
    assert "|tok:cjk|" in scores["rouge1"].signature


def test_chinese_pair_scores_two_thirds_where_rouge_score_default_gives_zero() -> None:
    prediction, reference = "今天天气很好", "今天天气不错"
    scores = ROUGE().compute([prediction], [[reference]])
    assert scores["rouge1"].score == pytest.approx(2 / 3)  # 今天天气: 4 of 6 characters each way
    assert scores["rouge2"].score == pytest.approx(3 / 5)  # 今天 天天 天气 of 5 bigrams
    assert RougeScorer(["rouge1"]).score(reference, prediction)["rouge1"].fmeasure == 0.0
    with pytest.warns(UserWarning, match="tokenizer 'default' .* drops letters from 2 of 2 texts"):
        default = ROUGE(ROUGE.Options(tokenizer="default")).compute([prediction], [[reference]])
    assert default["rouge1"].score == 0.0
    assert "|tok:default|" in default["rouge1"].signature


def test_language_selects_cjk_and_english_scores_do_not_change() -> None:
    by_lang = ROUGE(lang="zh").compute(*ENGLISH)
    default = ROUGE().compute(*ENGLISH)
    assert "|tok:cjk|" in by_lang["rougeL"].signature
    assert {t: s.score for t, s in by_lang.items()} == {t: s.score for t, s in default.items()}


def test_several_references_take_the_best_f() -> None:
    scores = ROUGE(ROUGE.Options(rouge_types=("rouge1",))).compute(["the cat"], [["a dog", "the cat sat"]])
    # Second reference: precision 2/2, recall 2/3, F = 2PR/(P+R) = 0.8.
    assert scores["rouge1"].score == pytest.approx(0.8)
    assert scores["rouge1"].details == pytest.approx({"precision": 1.0, "recall": 2 / 3})
    assert "|nrefs:max2|" in scores["rouge1"].signature


def test_aggregate_on_resampled_rows_equals_the_mean_of_that_subset() -> None:
    metric = ROUGE()
    stats = metric.sample_stats(*ENGLISH)
    rows = [3, 3, 0, 4]
    scores = metric.aggregate(stats[rows])
    reference = expected(RougeScorer(TYPES), *ENGLISH)
    for t in TYPES:
        assert scores[t].score == np.mean(reference[t][rows, 2])
    assert "|nrefs:maxvar|" in scores["rouge1"].signature
    assert "|nrefs:max2|" in metric.aggregate(stats[[3, 3]])["rouge1"].signature
    assert "|nrefs:1|" in metric.aggregate(stats[[0, 1]])["rouge1"].signature


def test_rows_from_separate_auto_calls_are_signed_cjk() -> None:
    metric = ROUGE()
    stats = np.vstack([metric.sample_stats(*ENGLISH), metric.sample_stats(*CHINESE)])
    assert "|tok:cjk|" in metric.aggregate(stats)["rouge1"].signature


def test_empty_prediction_scores_zero() -> None:
    metric = ROUGE()
    assert metric.sample_scores(metric.sample_stats([""], [["some text"]])) == {t: [0.0] for t in TYPES}


def test_rouge_types_restrict_outputs() -> None:
    metric = ROUGE(ROUGE.Options(rouge_types=("rouge3", "rougeL")))
    assert metric.outputs == ("rouge3", "rougeL")
    stats = metric.sample_stats(["a b c d"], [["a b c e"]])
    assert stats.shape == (1, 3 * 2 + 2)
    scores = metric.aggregate(stats)
    assert list(scores) == ["rouge3", "rougeL"]
    assert scores["rouge3"].score == pytest.approx(0.5)  # "a b c" of 2 trigrams each way


@pytest.mark.parametrize("types", [("rouge0",), ("rougeX",), ()])
def test_invalid_rouge_types_are_a_user_error(types: tuple[str, ...]) -> None:
    with pytest.raises(UserError, match="rouge_types"):
        ROUGE(ROUGE.Options(rouge_types=types))


def test_option_defaults_are_rouge_scores() -> None:
    params = inspect.signature(RougeScorer).parameters
    options = ROUGE.Options()
    assert options.use_stemmer == params["use_stemmer"].default
    assert options.split_summaries == params["split_summaries"].default
    assert options.rouge_types == ROUGE.outputs


def _has_punkt() -> bool:
    try:
        nltk.sent_tokenize("One. Two.")
    except LookupError:
        return False
    return True


@pytest.mark.skipif(_has_punkt(), reason="NLTK punkt is installed")
def test_split_summaries_without_punkt_says_how_to_fix() -> None:
    with pytest.raises(UserError, match=r"punkt_tab.*split_summaries"):
        ROUGE(ROUGE.Options(split_summaries=True))


def test_sample_without_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="sample 0 has no reference"):
        ROUGE().sample_stats(["a"], [[]])


def test_empty_input() -> None:
    metric = ROUGE()
    empty = metric.sample_stats([], [])
    assert empty.shape == (0, 3 * 4 + 2)
    with pytest.raises(ValueError, match="no samples"):
        metric.aggregate(empty)
    with pytest.raises(ValueError, match="unknown without rows"):
        metric.signature(empty)
