"""BLEU/chrF/TER must equal sacrebleu called directly on the same data, bit for bit."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import sacrebleu
from sacrebleu import metrics as sb

from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric
from aigc_eval.metrics.sacrebleu_metrics import BLEU, CHRF, TER, CHRFPlusPlus

# (predictions, sample-major references, sacrebleu reference streams written out by hand)
DATASETS: dict[str, tuple[list[str], list[list[str]], list[list[str | None]]]] = {
    "english": (
        [
            "The cat sat on the mat.",
            "",
            "hello",
            "A quick brown fox jumps over the lazy dog",
            "Results are GOOD",
        ],
        [
            ["The cat is on the mat."],
            ["Nothing here."],
            ["hello"],
            ["The quick brown fox jumped over the lazy dog"],
            ["results are good"],
        ],
        [
            [
                "The cat is on the mat.",
                "Nothing here.",
                "hello",
                "The quick brown fox jumped over the lazy dog",
                "results are good",
            ]
        ],
    ),
    "chinese": (
        ["今天天气很好", "我喜欢吃苹果。", "", "好", "他在北京工作了三年"],
        [["今天天气不错"], ["我爱吃苹果。"], ["没有"], ["好"], ["他在北京工作三年了"]],
        [["今天天气不错", "我爱吃苹果。", "没有", "好", "他在北京工作三年了"]],
    ),
    "mixed": (
        ["我用GPT-4写代码", "The model 很好", "OK"],
        [["我用 GPT-4 写代码"], ["这个 model 很好"], ["ok"]],
        [["我用 GPT-4 写代码", "这个 model 很好", "ok"]],
    ),
    "two_refs": (
        ["The cat sat on the mat.", "hello world", "A fast fox"],
        [
            ["The cat is on the mat.", "A cat sat on a mat."],
            ["hello there", "world hello"],
            ["The quick fox", "a fast brown fox"],
        ],
        [
            ["The cat is on the mat.", "hello there", "The quick fox"],
            ["A cat sat on a mat.", "world hello", "a fast brown fox"],
        ],
    ),
    "uneven_refs": (
        ["The cat sat on the mat.", "hello world", "A fast fox", "今天很好"],
        [
            ["The cat is on the mat."],
            ["hello there", "world hello", "hi world"],
            ["The quick fox", "a fast fox"],
            ["今天不错"],
        ],
        [
            ["The cat is on the mat.", "hello there", "The quick fox", "今天不错"],
            [None, "world hello", "a fast fox", None],
            [None, "hi world", None, None],
        ],
    ),
}

# (ours, sacrebleu metric for corpus scores, sacrebleu metric for sentence scores)
Config = tuple[Callable[[], Metric], Callable[[], Any], Callable[[], Any]]
CONFIGS: dict[str, Config] = {
    "bleu": (BLEU, sb.BLEU, lambda: sb.BLEU(effective_order=True)),
    "bleu-zh": (
        lambda: BLEU(lang="zh"),
        lambda: sb.BLEU(tokenize="zh"),
        lambda: sb.BLEU(tokenize="zh", effective_order=True),
    ),
    "bleu-lowercase": (
        lambda: BLEU(BLEU.Options(lowercase=True)),
        lambda: sb.BLEU(lowercase=True),
        lambda: sb.BLEU(lowercase=True, effective_order=True),
    ),
    "bleu-add-k": (
        lambda: BLEU(BLEU.Options(smooth_method="add-k", tokenize="char")),
        lambda: sb.BLEU(smooth_method="add-k", tokenize="char"),
        lambda: sb.BLEU(smooth_method="add-k", tokenize="char", effective_order=True),
    ),
    "chrf": (CHRF, sb.CHRF, sb.CHRF),
    "chrf-lowercase": (
        lambda: CHRF(CHRF.Options(lowercase=True)),
        lambda: sb.CHRF(lowercase=True),
        lambda: sb.CHRF(lowercase=True),
    ),
    "chrf++": (CHRFPlusPlus, lambda: sb.CHRF(word_order=2), lambda: sb.CHRF(word_order=2)),
    "ter": (TER, sb.TER, sb.TER),
    "ter-asian": (
        lambda: TER(TER.Options(normalized=True), lang="zh"),
        lambda: sb.TER(normalized=True, asian_support=True),
        lambda: sb.TER(normalized=True, asian_support=True),
    ),
}

ALL = [(c, d) for c in CONFIGS for d in DATASETS]


@pytest.mark.parametrize(("config", "dataset"), ALL)
def test_corpus_score_and_signature_equal_sacrebleu(config: str, dataset: str) -> None:
    ours, corpus, _ = CONFIGS[config]
    predictions, references, streams = DATASETS[dataset]
    metric, reference = ours(), corpus()
    (score,) = metric.compute(predictions, references).values()
    expected = reference.corpus_score(predictions, streams)
    assert score.score == expected.score
    assert score.signature == reference.get_signature().format()


@pytest.mark.parametrize(("config", "dataset"), ALL)
def test_sample_scores_equal_sacrebleu_sentence_scores(config: str, dataset: str) -> None:
    ours, _, sentence = CONFIGS[config]
    predictions, references, _ = DATASETS[dataset]
    metric = ours()
    (scores,) = metric.sample_scores(metric.sample_stats(predictions, references)).values()
    expected = [
        sentence().sentence_score(p, refs).score for p, refs in zip(predictions, references, strict=True)
    ]
    assert scores == expected


@pytest.mark.parametrize("config", list(CONFIGS))
def test_aggregate_on_resampled_rows_equals_sacrebleu_on_that_subset(config: str) -> None:
    ours, corpus, _ = CONFIGS[config]
    predictions, references, _ = DATASETS["uneven_refs"]
    metric = ours()
    stats = metric.sample_stats(predictions, references)
    rows = [1, 1, 2, 0, 2]
    (score,) = metric.aggregate(stats[rows]).values()
    sub_refs = [references[i] for i in rows]
    streams = [[refs[j] if j < len(refs) else None for refs in sub_refs] for j in range(3)]
    reference = corpus()
    assert score.score == reference.corpus_score([predictions[i] for i in rows], streams).score
    assert score.signature == reference.get_signature().format()


def test_aggregate_does_not_change_the_rows() -> None:
    # add-k smoothing adds to sacrebleu's count lists in place; our rows must stay intact.
    predictions, references, _ = DATASETS["english"]
    metric = BLEU(BLEU.Options(smooth_method="add-k"))
    stats = metric.sample_stats(predictions, references)
    before = stats.copy()
    first = metric.aggregate(stats)["bleu"].score
    assert metric.aggregate(stats)["bleu"].score == first
    assert np.array_equal(stats, before)


def test_bleu_details_match_sacrebleu() -> None:
    predictions, references, streams = DATASETS["english"]
    details = BLEU().compute(predictions, references)["bleu"].details
    expected = sacrebleu.corpus_bleu(predictions, streams)
    assert details == {
        "bp": expected.bp,
        "sys_len": expected.sys_len,
        "ref_len": expected.ref_len,
        **{f"p{n}": p for n, p in enumerate(expected.precisions, start=1)},
    }


def test_chinese_needs_the_zh_tokenizer() -> None:
    predictions, references, streams = DATASETS["chinese"]
    zh = BLEU(lang="zh-CN").compute(predictions, references)["bleu"]
    assert "tok:zh" in zh.signature
    assert zh.score == sacrebleu.corpus_bleu(predictions, streams, tokenize="zh").score
    assert zh.score > 30
    # 13a sees each unspaced Chinese sentence as one token: only the exact match "好" counts.
    assert BLEU().compute(predictions, references)["bleu"].score == 0.0


def test_one_sentence_bleu_value() -> None:
    metric = BLEU(lang="zh")
    stats = metric.sample_stats(["今天天气很好"], [["今天天气不错"]])
    assert metric.sample_scores(stats)["bleu"][0] == pytest.approx(50.81, abs=0.005)


def test_signature_nrefs_follows_the_data() -> None:
    metric = CHRF()
    predictions, references, _ = DATASETS["uneven_refs"]
    stats = metric.sample_stats(predictions, references)
    assert "nrefs:var|" in metric.aggregate(stats)["chrf"].signature
    assert metric.aggregate(stats[[2]])["chrf"].signature.startswith("nrefs:2|")
    assert metric.aggregate(stats[[0, 3]])["chrf"].signature.startswith("nrefs:1|")


def test_chrf_plus_plus_is_word_order_two() -> None:
    predictions, references, streams = DATASETS["english"]
    scores = CHRFPlusPlus().compute(predictions, references)
    assert list(scores) == ["chrf++"]
    assert "|nw:2|" in scores["chrf++"].signature
    assert scores["chrf++"].score == sacrebleu.corpus_chrf(predictions, streams, word_order=2).score
    assert scores["chrf++"].score != CHRF().compute(predictions, references)["chrf"].score


def test_ter_asian_support_follows_language() -> None:
    predictions, references, streams = DATASETS["chinese"]
    options = TER.Options(normalized=True)
    zh = TER(options, lang="zh").compute(predictions, references)["ter"]
    en = TER(options, lang="en").compute(predictions, references)["ter"]
    assert "asian:yes" in zh.signature and "asian:no" in en.signature
    assert zh.score == sacrebleu.corpus_ter(predictions, streams, normalized=True, asian_support=True).score
    assert en.score == sacrebleu.corpus_ter(predictions, streams, normalized=True).score
    assert zh.score != en.score
    assert zh.higher_is_better is False
    explicit = TER(TER.Options(normalized=True, asian_support=False), lang="zh")
    assert explicit.compute(predictions, references)["ter"].score == en.score


def test_ter_details() -> None:
    predictions, references, streams = DATASETS["two_refs"]
    details = TER().compute(predictions, references)["ter"].details
    expected = sacrebleu.corpus_ter(predictions, streams)
    assert details == {"num_edits": expected.num_edits, "ref_length": expected.ref_length}


@pytest.mark.parametrize(("cls", "reference"), [(BLEU, sb.BLEU), (CHRF, sb.CHRF), (TER, sb.TER)])
def test_option_defaults_are_sacrebleus(cls: type, reference: type) -> None:
    params = inspect.signature(reference).parameters
    for field, info in cls.Options.model_fields.items():
        if field == "asian_support":
            assert info.default is None  # decided from the language; sacrebleu's default is False
            continue
        assert info.default == params[field].default, field


def test_chrf_plus_plus_defaults() -> None:
    assert CHRFPlusPlus.Options().word_order == 2
    assert CHRFPlusPlus.Options().char_order == CHRF.Options().char_order == 6


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="extra"):
        BLEU.Options(tokenise="zh")


def test_unknown_tokenizer_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match=r"'nope'.*13a.*zh"):
        BLEU(BLEU.Options(tokenize="nope"))


@pytest.mark.skipif(importlib.util.find_spec("MeCab") is not None, reason="MeCab is installed")
def test_japanese_without_mecab_says_what_to_install() -> None:
    with pytest.raises(UserError, match=r'pip install "sacrebleu\[ja\]".*tokenize'):
        BLEU(lang="ja")


@pytest.mark.skipif(importlib.util.find_spec("MeCab") is None, reason="MeCab is not installed")
def test_japanese_with_mecab_uses_it() -> None:
    metric = BLEU(lang="ja")
    metric.compute(["猫が好きです"], [["猫が好きだ"]])
    assert "tok:ja-mecab" in metric.signature(metric.sample_stats(["猫"], [["猫"]]))


def test_explicit_tokenizer_wins_over_language() -> None:
    metric = BLEU(BLEU.Options(tokenize="char"), lang="ja")
    assert "tok:char" in metric.compute(["猫"], [["猫"]])["bleu"].signature


def test_sample_without_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="sample 1 has no reference"):
        BLEU().sample_stats(["a", "b"], [["a"], []])


def test_misaligned_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="aligned"):
        CHRF().sample_stats(["a", "b"], [["a"]])


@pytest.mark.parametrize("cls", [BLEU, CHRF, CHRFPlusPlus, TER])
def test_empty_input_gives_empty_rows_and_no_aggregate(cls: type[Metric]) -> None:
    metric = cls()
    one = metric.sample_stats(["a b"], [["a b"]])
    empty = metric.sample_stats([], [])
    assert empty.shape == (0, one.shape[1])
    with pytest.raises(ValueError, match="no samples"):
        metric.aggregate(empty)


def test_signature_needs_rows_and_is_a_function_of_them() -> None:
    with pytest.raises(ValueError, match="unknown without rows"):
        BLEU().signature(np.zeros((0, 10)))
    metric = BLEU()
    one_ref = metric.sample_stats(["a b c"], [["a b c"]])
    two_refs = metric.sample_stats(["a b c"], [["a b c", "a b"]])
    assert "nrefs:2" in metric.signature(two_refs)
    assert "nrefs:1" in metric.signature(one_ref)  # not "the data scored last"
