"""ROUGE on every script: no silent 0, exact values against rouge-score, validated language codes."""

from __future__ import annotations

import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import yaml
from rouge_score.rouge_scorer import RougeScorer
from rouge_score.tokenizers import DefaultTokenizer

from aigc_eval.cli import main
from aigc_eval.config import load_suite, parse_suite
from aigc_eval.errors import UserError
from aigc_eval.metrics.rouge import ROUGE
from aigc_eval.metrics.sacrebleu_metrics import BLEU, TER

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

# Grapheme_Cluster_Break=SpacingMark letters of Thai (SARA AM, LAKKHANGYAO): they join the consonant.
_THAI_SPACING_MARKS = {"\u0e33", "\u0e45"}


class ReferenceTokenizer:
    """Written apart from aigc_eval: character categories from ``unicodedata``, no regex.

    Case-folded; a Thai character starts a token unless it is a mark; every other run of letters,
    marks and digits is a word, whose ASCII words rouge-score's own tokenizer (and stemmer) handles.
    """

    def __init__(self, use_stemmer: bool = False) -> None:
        self._ascii = DefaultTokenizer(use_stemmer)

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        word = ""
        thai = False  # whether the open token is a Thai cluster
        for char in text.casefold():
            is_word = unicodedata.category(char)[0] in "LMN"
            is_mark = unicodedata.category(char)[0] == "M" or char in _THAI_SPACING_MARKS
            if unicodedata.name(char, "").startswith("THAI") and not (is_mark and thai and word):
                tokens.append(word)
                word, thai = char, True
            elif is_word and not (thai and not is_mark):
                word += char
            else:
                tokens.append(word)
                word, thai = (char, False) if is_word else ("", False)
        tokens.append(word)
        return [
            self._ascii.tokenize(t)[0] if t.isascii() and t.isalnum() and len(t) > 3 else t
            for t in tokens
            if t
        ]


SCRIPTS = {
    "thai": (
        ["ฉันชอบกินข้าวผัด", "วันนี้อากาศดีมาก", "น้ำเย็น"],
        [["ฉันชอบกินก๋วยเตี๋ยว"], ["วันนี้อากาศร้อนมาก", "พรุ่งนี้อากาศดี"], ["น้ำร้อน"]],
    ),
    "arabic": (
        ["ذهب الولد إلى المدرسة صباحا", "القطة نائمة"],
        [["ذهب الولد إلى السوق"], ["القطة نائمة على السرير"]],
    ),
    "russian": (
        ["Кошка сидит на ковре.", "Сегодня хорошая погода"],
        [["Кошка лежит на ковре"], ["Сегодня плохая погода", "погода хорошая"]],
    ),
    "hindi": (
        ["मुझे हिन्दी भाषा पसंद है", "आज मौसम अच्छा है"],
        [["मुझे हिन्दी पसंद है"], ["कल मौसम अच्छा था"]],
    ),
    "greek": (
        ["Η γάτα κάθεται στο χαλί", "ΚΑΛΗΜΕΡΑ ΚΟΣΜΟΣ"],
        [["Η γάτα κοιμάται στο χαλί"], ["καλημέρα κόσμος"]],
    ),
    "hebrew": (
        ["החתול יושב על השטיח", "מזג האוויר יפה היום"],
        [["החתול שוכב על השטיח"], ["מזג האוויר חם היום"]],
    ),
    "latin+cyrillic": (
        ["The model говорит running fast", "GPT-4 пишет код"],
        [["The models говорят run fast"], ["GPT-4 пишет хороший код"]],
    ),
}


def _expected(scorer: RougeScorer, data: tuple[list[str], list[list[str]]]) -> dict[str, list[float]]:
    """Per-sample F per type from rouge-score itself (best reference, as score_multi picks it)."""
    predictions, references = data
    best = [scorer.score_multi(refs, p) for p, refs in zip(predictions, references, strict=True)]
    return {t: [s[t].fmeasure for s in best] for t in TYPES}


@pytest.mark.parametrize("script", SCRIPTS)
def test_identical_text_scores_one_where_rouge_score_default_gives_zero(script: str) -> None:
    predictions = SCRIPTS[script][0]
    scores = ROUGE().compute(predictions, [[p] for p in predictions])
    assert {t: s.score for t, s in scores.items()} == {t: 1.0 for t in TYPES}
    assert "|tok:unicode|" in scores["rouge1"].signature
    if script != "latin+cyrillic":
        assert RougeScorer(["rouge1"]).score(predictions[0], predictions[0])["rouge1"].fmeasure == 0.0


@pytest.mark.parametrize("use_stemmer", [False, True])
@pytest.mark.parametrize("script", SCRIPTS)
def test_partial_overlap_equals_rouge_score_with_an_independent_tokenizer(
    script: str, use_stemmer: bool
) -> None:
    data = SCRIPTS[script]
    metric = ROUGE(ROUGE.Options(use_stemmer=use_stemmer))
    stats = metric.sample_stats(*data)
    scores = metric.aggregate(stats)
    reference = _expected(RougeScorer(TYPES, tokenizer=ReferenceTokenizer(use_stemmer)), data)
    assert metric.sample_scores(stats) == reference
    for t in TYPES:
        assert scores[t].score == np.mean(reference[t])
        assert 0 < scores[t].score < 1
    assert scores["rouge1"].signature.split("|")[1:3] == [
        "tok:unicode",
        f"stem:{'yes' if use_stemmer else 'no'}",
    ]


def test_hindi_words_keep_their_vowel_signs() -> None:
    # Python's re \w splits हिन्दी at its marks into ह, न, द: 5 shared "words" instead of 1 of 2.
    scores = ROUGE(ROUGE.Options(rouge_types=("rouge1",))).compute(["हिन्दी भाषा"], [["हिन्दी"]])
    assert scores["rouge1"].score == pytest.approx(2 / 3)
    assert scores["rouge1"].details == pytest.approx({"precision": 0.5, "recall": 1.0})


def test_thai_is_scored_by_grapheme_cluster() -> None:
    # น้ำเย็น / น้ำร้อน: clusters น้ำ เ ย็ น / น้ำ ร้ อ น share น้ำ and น: 2 of 4 each way.
    scores = ROUGE(ROUGE.Options(rouge_types=("rouge1",))).compute(["น้ำเย็น"], [["น้ำร้อน"]])
    assert scores["rouge1"].score == pytest.approx(0.5)


ENGLISH = (
    ["The cat sat on the mat.", "Running quickly, the runners ran home", "hello"],
    [["The cat is on the mat."], ["The runner runs home quickly"], ["hello there"]],
)


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_english_among_other_scripts_keeps_rouge_score_default_values(use_stemmer: bool) -> None:
    # One Russian sample makes the corpus unicode; the English samples must not change at all.
    predictions, references = [*ENGLISH[0], "Привет мир"], [*ENGLISH[1], ["Привет"]]
    metric = ROUGE(ROUGE.Options(use_stemmer=use_stemmer))
    stats = metric.sample_stats(predictions, references)
    per_sample = metric.sample_scores(stats)
    default = _expected(RougeScorer(TYPES, use_stemmer=use_stemmer), ENGLISH)
    assert {t: v[:3] for t, v in per_sample.items()} == default
    assert per_sample["rouge1"][3] == pytest.approx(2 / 3)
    assert "|tok:unicode|" in metric.signature(stats)


@pytest.mark.parametrize(
    ("lang", "texts", "tokenizer"),
    [
        (None, ENGLISH, "default"),
        (None, (["今天天气很好"], [["今天天气不错"]]), "cjk"),
        (None, (["Кошка спит"], [["Кошка"]]), "unicode"),
        (None, (["今天 Кошка"], [["今天"]]), "unicode"),
        (None, (["Café au lait"], [["cafe"]]), "unicode"),
        ("en", ENGLISH, "default"),
        ("zh-CN", ENGLISH, "cjk"),
        ("ru", ENGLISH, "unicode"),
        ("th", (["ฉันชอบ"], [["ฉัน"]]), "unicode"),
    ],
)
def test_signature_names_the_tokenizer(lang: str | None, texts: tuple, tokenizer: str) -> None:
    scores = ROUGE(lang=lang).compute(*texts)
    assert scores["rougeL"].signature.split("|")[1] == f"tok:{tokenizer}"


@pytest.mark.parametrize("lang", ["de", "ru", "zh"])
def test_a_language_tokenizer_leaves_ascii_english_as_rouge_score_scores_it(lang: str) -> None:
    metric = ROUGE(lang=lang)
    assert metric.sample_scores(metric.sample_stats(*ENGLISH)) == _expected(RougeScorer(TYPES), ENGLISH)


@pytest.mark.parametrize(
    ("kwargs", "tokenizer", "why"),
    [
        ({"lang": "en"}, "default", "lang en"),
        ({"options": ROUGE.Options(tokenizer="cjk")}, "cjk", "the rouge option tokenizer"),
    ],
)
def test_a_tokenizer_that_drops_letters_warns(kwargs: dict, tokenizer: str, why: str) -> None:
    with pytest.warns(
        UserWarning, match=rf"tokenizer '{tokenizer}' \(from {why}\) drops letters from 2 of 4"
    ) as got:
        scores = ROUGE(**kwargs).compute(["Кошка спит", "hello"], [["Кошка"], ["hello"]])
    assert "prediction 0, 'Кошка спит', loses 'кошаспит'" in str(got[0].message)
    assert "tokenizer: unicode" in str(got[0].message)
    assert scores["rouge1"].score == 0.5  # the Russian pair scores 0, the English one 1


def test_a_text_without_letters_warns_and_an_empty_one_does_not() -> None:
    with pytest.warns(
        UserWarning, match=r"1 of 6 texts are not empty but have no letter or digit.*prediction 1, '🙂 !!!'"
    ):
        ROUGE().compute(["good", "🙂 !!!", ""], [["good"], ["fine"], ["x"]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ROUGE().compute(["", "  ", "ok"], [["a"], ["b"], ["ok"]])
        ROUGE().compute(*SCRIPTS["thai"])


def test_rouge_rejects_an_unknown_language() -> None:
    with pytest.raises(UserError, match=r"rouge: lang: unknown language code 'klingon'.* en .* zh"):
        ROUGE(lang="klingon")


@pytest.mark.parametrize("lang", ["zh", "zh-CN", "zh_cn", "ZH-Hans"])
def test_bleu_and_ter_map_any_spelling_of_a_language(lang: str) -> None:
    hyps, refs = ["今天天气很好"], ["今天天气不错"]
    bleu = BLEU(lang=lang)
    assert bleu.tokenize == "zh"
    assert (
        bleu.compute(hyps, [[r] for r in refs])["bleu"].score
        == sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score
    )
    ter = TER(lang=lang).compute(hyps, [[r] for r in refs])["ter"].score
    assert ter == sacrebleu.corpus_ter(hyps, [refs], asian_support=True).score


@pytest.mark.parametrize("metric", [BLEU, TER])
def test_bleu_and_ter_reject_an_unknown_language(metric: type) -> None:
    with pytest.raises(
        UserError, match=rf"{metric.name}: lang: unknown language code 'chinese'; did you mean 'zh'"
    ):
        metric(lang="chinese")


SUITE = {
    "name": "s",
    "models": [{"name": "m", "path": "model"}],
    "tasks": [{"name": "x", "data": "x.jsonl", "lang": "chinese"}],
    "metrics": ["rouge"],
}


def test_unknown_lang_in_a_suite_names_the_key_and_the_codes(tmp_path: Path) -> None:
    expected = (
        r"tasks\[0\]\.lang: unknown language code 'chinese'; did you mean 'zh' \(Chinese\)\?.* en .* zh"
    )
    with pytest.raises(UserError, match=rf"s\.yaml: {expected}"):
        parse_suite(SUITE, "s.yaml")
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE), encoding="utf-8")
    with pytest.raises(UserError, match=rf"suite\.yaml: {expected}"):
        load_suite(path)


def test_suite_lang_is_normalised() -> None:
    suite = parse_suite({**SUITE, "tasks": [{"name": "x", "data": "x.jsonl", "lang": "pt_br"}]})
    assert suite.tasks[0].lang == "pt-BR"


def test_cli_unknown_lang_exits_2_listing_the_codes(tmp_path: Path, capsys) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello world\n", encoding="utf-8")
    args = [
        "score",
        "--metric",
        "rouge",
        "--lang",
        "klingon",
        "--predictions",
        str(text),
        "--references",
        str(text),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--lang: unknown language code 'klingon'" in err
    assert " en " in err and " th " in err and " zh " in err


def test_cli_scores_russian_with_the_unicode_tokenizer(tmp_path: Path, capsys) -> None:
    hyp, ref = tmp_path / "h.txt", tmp_path / "r.txt"
    hyp.write_text("Кошка сидит на ковре\n", encoding="utf-8")
    ref.write_text("Кошка лежит на ковре\n", encoding="utf-8")
    args = [
        "score",
        "--metric",
        "rouge",
        "--lang",
        "RU",
        "--predictions",
        str(hyp),
        "--references",
        str(ref),
        "--json",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert '"score": 0.75' in out and "tok:unicode" in out
