"""ROUGE rows from rouge-score-rs equal rouge-score's bit for bit; without it, rouge-score runs."""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import nltk
import numpy as np
import pytest
from rouge_score import rouge_scorer
from rouge_score.rouge_scorer import RougeScorer

from aigc_eval.metrics import rouge_fast
from aigc_eval.metrics.rouge import ROUGE
from aigc_eval.metrics.tokenize import RougeTokenizerName, rouge_tokenizer

TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ALL_TYPES = (*(f"rouge{n}" for n in range(1, 10)), "rougeL", "rougeLsum")


def reference(
    types: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenizer: RougeTokenizerName = "default",
    use_stemmer: bool = False,
    split_summaries: bool = False,
) -> np.ndarray:
    """rouge-score's ``score_multi`` per sample: (P, R, F) per type, its own tokenizer for default."""
    custom = None if tokenizer == "default" else rouge_tokenizer(tokenizer, use_stemmer)
    scorer = RougeScorer(
        list(types), use_stemmer=use_stemmer, split_summaries=split_summaries, tokenizer=custom
    )
    rows = []
    for prediction, refs in zip(predictions, references, strict=True):
        best = scorer.score_multi(list(refs), prediction)
        rows.append([float(value) for t in types for value in best[t]])
    return np.array(rows, dtype=np.float64).reshape(len(rows), 3 * len(types))


def metric_rows(
    types: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenizer: RougeTokenizerName = "default",
    use_stemmer: bool = False,
    split_summaries: bool = False,
) -> np.ndarray:
    """The P/R/F columns of ``ROUGE.sample_stats`` (warnings about lost letters are expected here)."""
    options = ROUGE.Options(
        rouge_types=tuple(types),
        use_stemmer=use_stemmer,
        tokenizer=tokenizer,
        split_summaries=split_summaries,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ROUGE(options).sample_stats(predictions, references)[:, :-2]


def assert_bit_identical(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    differ = np.argwhere(got.view(np.uint64) != want.view(np.uint64))
    assert len(differ) == 0, f"{len(differ)} values differ, first at {differ[0]}: {got[tuple(differ[0])]!r}"


def check(*args: object, **kwargs: object) -> None:
    assert_bit_identical(metric_rows(*args, **kwargs), reference(*args, **kwargs))


@pytest.fixture(autouse=True)
def fast_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test but the fallback's must run the Rust path: the metric may not reach rouge-score."""
    if "fallback" in request.node.name:
        return
    pytest.importorskip("rouge_score_rs")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the metric used rouge-score although rouge-score-rs is installed")

    monkeypatch.setattr(rouge_scorer, "RougeScorer", refuse)  # rouge.py imports it from there on use


ENGLISH = (
    [
        "The cat sat on the mat.\nIt was happy.",
        "Running quickly, the runners ran home",
        "A quick brown fox jumps over the lazy dog",
        "Generalization of connected caresses: ponies agreed, sized 3.50 and 1,000 items!",
        "it's the U.S.A.'s e-mail — don't",
    ],
    [
        ["The cat is on the mat.\nThe cat was happy."],
        ["The runner runs home quickly", "Runners were running home"],
        ["The quick brown fox jumped over the lazy dog", "a fast brown fox", "lazy dogs"],
        ["Connections generalize; the pony agrees at size 3 50, 1000 items."],
        ["its the USA s email dont", "It is the U.S.A. e-mail; do not"],
    ],
)


@pytest.mark.parametrize("use_stemmer", [False, True], ids=["plain", "stemmed"])
def test_english_equals_rouge_score(use_stemmer: bool) -> None:
    check(ALL_TYPES, *ENGLISH, use_stemmer=use_stemmer)


def test_the_rust_scorer_is_the_one_in_use() -> None:
    assert rouge_fast.native() is not None
    assert metric_rows(TYPES, ["a b c"], [["a b d"]])[0, 2] == pytest.approx(2 / 3)


def test_several_references_in_uneven_counts_keep_the_first_best_f() -> None:
    # "a b" against "a" (P 1/2, R 1) and against "a b c d" (P 1, R 1/2): the same F, 2/3. rouge-score's
    # np.argmax keeps the first, so the order of equal-F references decides P and R.
    predictions = ["a b", "a b", "x y z", "the cat sat", "one"]
    references = [
        ["a", "a b c d"],
        ["a b c d", "a"],
        ["x", "y z", "x y", "x y z w", "q"],
        ["a cat", "the cat", "the cat sat", "the cat sat down", "cat", "sat", "the"],
        ["one"],
    ]
    check(ALL_TYPES, predictions, references)
    rows = metric_rows(("rouge1",), predictions, references)
    assert rows[:2].tolist() == [[0.5, 1.0, 2 / 3], [1.0, 0.5, 2 / 3]]


def test_rouge_lsum_with_newlines() -> None:
    predictions = [
        "First line here.\nSecond line there.\n\nThird after a blank line.\n",
        "\nleading newline\ntrailing\n\n",
        "one sentence without a newline",
        "a b\n?!\nc d",  # a line without tokens
        "x\ny\nz",
    ]
    references = [
        ["Second line here.\nFirst line there.\nThird line after."],
        ["leading\nnewline trailing"],
        ["one sentence\nwithout\na newline"],
        ["a b c d", "c d\n\n...\na b"],
        ["z\ny\nx", "x y z"],
    ]
    for use_stemmer in (False, True):
        check(("rougeLsum",), predictions, references, use_stemmer=use_stemmer)
        check(TYPES, predictions, references, use_stemmer=use_stemmer)
    for tokenizer in ("cjk", "unicode"):
        check(TYPES, predictions, references, tokenizer=tokenizer)
        check(("rougeLsum",), predictions, references, tokenizer=tokenizer)


CJK = {
    "zh": (
        ["今天天气很好", "我喜欢吃苹果。\n苹果很甜", "我用GPT-4写代码，Score很高", "好"],
        [["今天天气不错"], ["我爱吃苹果。", "苹果好吃\n我喜欢"], ["我用 GPT-4 写代码"], ["好"]],
    ),
    "ja": (
        ["カタカナ・ひらがな、漢字も使う。", "今日は良い天気です", "ﾊﾝｶｸｶﾀｶﾅ"],
        [["ひらがなとカタカナ、漢字。"], ["今日はいい天気でした", "明日は雨です"], ["ﾊﾝｶｸ"]],
    ),
    "ko": (
        ["한국어 문장입니다", "오늘 날씨가 좋아요\n내일도 좋아요", "ㄱㄴㄷ 한글"],
        [["한국어 문장이에요"], ["오늘 날씨 좋네요", "날씨가 좋아요"], ["한글 ㄱㄴ"]],
    ),
}


@pytest.mark.parametrize("lang", sorted(CJK))
@pytest.mark.parametrize("use_stemmer", [False, True], ids=["plain", "stemmed"])
def test_cjk_equals_rouge_score_with_our_tokenizers(lang: str, use_stemmer: bool) -> None:
    for tokenizer in ("cjk", "unicode"):
        check(ALL_TYPES, *CJK[lang], tokenizer=tokenizer, use_stemmer=use_stemmer)


def test_lang_chooses_the_tokenizer_and_rows_still_match() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = ROUGE(lang="zh").sample_stats(*CJK["zh"])
    assert_bit_identical(stats[:, :-2], reference(TYPES, *CJK["zh"], tokenizer="cjk"))
    assert set(stats[:, -1]) == {1.0}  # the cjk tokenizer's index


OTHER_SCRIPTS = (
    [
        "ภาษาไทยง่ายมาก",
        "مرحبا بالعالم الجميل",
        "Правительство объявило новые меры",
        "नमस्ते दुनिया, यह हिंदी है",
        "Straße café naïve ﬁne İstanbul ΟΔΟΣ λόγος",
        "mixed: running ภาษา قطة 猫 кошка cats",
    ],
    [
        ["ภาษาไทยยากมาก", "ไทย"],
        ["مرحبا بالعالم"],
        ["Объявлены новые меры правительства", "правительство объявило"],
        ["नमस्ते हिंदी दुनिया"],
        ["STRASSE Café naive fine istanbul οδος λογος"],
        ["runner ภาษา 猫 قطة cat кошки", "cats and 猫"],
    ],
)


@pytest.mark.parametrize("use_stemmer", [False, True], ids=["plain", "stemmed"])
def test_thai_arabic_and_mixed_scripts_with_the_unicode_tokenizer(use_stemmer: bool) -> None:
    check(ALL_TYPES, *OTHER_SCRIPTS, tokenizer="unicode", use_stemmer=use_stemmer)
    check(ALL_TYPES, *OTHER_SCRIPTS, tokenizer="cjk", use_stemmer=use_stemmer)
    check(ALL_TYPES, *OTHER_SCRIPTS, tokenizer="default", use_stemmer=use_stemmer)


EDGES = (
    ["", "some text", "word", "...!?", "   ", "\n\n", "", "a", "0 1 2 3", "1 0"],
    [["some text"], [""], ["word"], ["?!"], ["x"], ["\n"], [""], ["a", ""], ["3 2 1 0"], ["0 1", "10"]],
)


@pytest.mark.parametrize("tokenizer", ["default", "cjk", "unicode"])
@pytest.mark.parametrize("use_stemmer", [False, True], ids=["plain", "stemmed"])
def test_empty_one_token_punctuation_and_digit_texts(
    tokenizer: RougeTokenizerName, use_stemmer: bool
) -> None:
    # Digit tokens matter for the surrogate route: they must not be confused with surrogate words.
    check(ALL_TYPES, *EDGES, tokenizer=tokenizer, use_stemmer=use_stemmer)
    rows = metric_rows(TYPES, *EDGES, tokenizer=tokenizer)
    assert rows[[0, 1, 3, 4, 5, 6]].tolist() == [[0.0] * 12] * 6
    assert rows[2].tolist() == [1.0] * 3 + [0.0] * 3 + [1.0] * 6  # one token has no bigram


def _words(rng: random.Random, vocabulary: Sequence[str], count: int, line_every: int) -> str:
    parts = []
    for i in range(count):
        parts.append(rng.choice(vocabulary))
        parts.append("\n" if line_every and i % line_every == line_every - 1 else " ")
    return "".join(parts)


ENGLISH_WORDS = [
    *["the", "a", "of", "to", "and", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at"],
    *["running", "runs", "runner", "ran", "happily", "happiness", "generalization", "general"],
    *["connected", "connection", "caresses", "ponies", "agreed", "sized", "cats", "cat", "dog", "dogs"],
    *["quickly", "quick", "jumped", "jumps", "over", "lazy", "brown", "fox"],
    *["3", "42", "2024", "3.50", "1,000", "don't", "e-mail", "U.S.A.", "—", ",", "."],
]


@pytest.mark.parametrize("use_stemmer", [False, True], ids=["plain", "stemmed"])
def test_long_texts(use_stemmer: bool) -> None:
    rng = random.Random(7)
    predictions = [_words(rng, ENGLISH_WORDS, 900, 17), _words(rng, ENGLISH_WORDS, 400, 0)]
    references = [
        [_words(rng, ENGLISH_WORDS, 700, 23)],
        [_words(rng, ENGLISH_WORDS, 500, 11), _words(rng, ENGLISH_WORDS, 60, 0)],
    ]
    check(("rouge1", "rouge4", "rougeL", "rougeLsum"), predictions, references, use_stemmer=use_stemmer)


RANDOM_VOCABULARY = [
    *ENGLISH_WORDS,
    *"今天天气很好我喜欢吃苹果",
    *["カタカナ", "ひらがな・漢字", "한국어", "문장", "ภาษาไทย", "ง่าย", "مرحبا", "بالعالم"],
    *["Правительство", "объявило", "नमस्ते", "café", "naïve", "Straße", "ﬁne", "İstanbul", "ΟΔΟΣ", "λόγος"],
    *["K", "10", "0", "7", "...", "?!", "\t"],
]


def random_corpus(seed: int, n: int) -> tuple[list[str], list[list[str]]]:
    """Seeded texts mixing English (stemmable forms), digits, punctuation, newlines and six scripts."""
    rng = random.Random(seed)

    def text() -> str:
        return _words(rng, RANDOM_VOCABULARY, rng.randint(0, 30), rng.choice([0, 3, 7]))

    predictions = [text() for _ in range(n)]
    references = [[text() for _ in range(rng.choice([1, 1, 2, 3]))] for _ in range(n)]
    return predictions, references


@pytest.mark.parametrize(
    ("tokenizer", "use_stemmer"),
    [
        ("default", False),
        ("default", True),
        ("cjk", False),
        ("cjk", True),
        ("unicode", False),
        ("unicode", True),
    ],
)
def test_randomized_corpus(tokenizer: RougeTokenizerName, use_stemmer: bool) -> None:
    predictions, references = random_corpus(seed=len(tokenizer) + use_stemmer, n=2000)
    check(
        ("rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"),
        predictions,
        references,
        tokenizer=tokenizer,
        use_stemmer=use_stemmer,
    )


@pytest.fixture
def punkt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A small real Punkt model (no download here): nltk.sent_tokenize works, with a few abbreviations."""
    model = tmp_path / "tokenizers" / "punkt_tab" / "english"
    model.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (model / name).write_text("")
    (model / "abbrev_types.txt").write_text("dr\nmr\ne.g\n")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])
    cached = nltk.tokenize._get_punkt_tokenizer  # sent_tokenize keeps the model it loaded first
    cached.cache_clear()
    yield
    cached.cache_clear()


@pytest.mark.parametrize("tokenizer", ["default", "cjk", "unicode"])
@pytest.mark.parametrize("use_stemmer", [False, True], ids=["plain", "stemmed"])
def test_split_summaries(punkt: None, tokenizer: RougeTokenizerName, use_stemmer: bool) -> None:
    assert nltk.sent_tokenize("Dr. Who ran. It rained!Then? ok.") == [
        "Dr. Who ran.",
        "It rained!Then?",
        "ok.",
    ]
    predictions = ["Dr. Smith ran home. It was late! Was it?", "One.Two. Three", "今天很好。 It rained.", ""]
    references = [
        ["It was late. Dr. Smith ran home.", "Mr. Smith ran. Home"],
        ["One. Two.Three"],
        ["It rained. 今天不错。"],
        ["Nothing."],
    ]
    for types in (TYPES, ("rougeLsum",), ("rouge2", "rougeLsum")):
        check(
            types, predictions, references, tokenizer=tokenizer, use_stemmer=use_stemmer, split_summaries=True
        )
    predictions, references = random_corpus(seed=11, n=300)
    check(TYPES, predictions, references, tokenizer=tokenizer, use_stemmer=use_stemmer, split_summaries=True)


def test_signature_does_not_depend_on_the_implementation(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = ROUGE(ROUGE.Options(use_stemmer=True))
    fast_scores = fast.aggregate(fast.sample_stats(*ENGLISH))
    monkeypatch.setitem(sys.modules, "rouge_score_rs", None)
    monkeypatch.setattr(rouge_scorer, "RougeScorer", RougeScorer)
    slow = ROUGE(ROUGE.Options(use_stemmer=True))
    slow_scores = slow.aggregate(slow.sample_stats(*ENGLISH))
    assert fast_scores == slow_scores
    assert fast_scores["rouge1"].signature.startswith("rouge-score:")


@pytest.mark.parametrize(
    ("tokenizer", "data"), [("default", ENGLISH), ("cjk", CJK["zh"]), ("unicode", OTHER_SCRIPTS)]
)
def test_fallback_without_rouge_score_rs_runs_rouge_score(
    tokenizer: RougeTokenizerName, data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rouge_score_rs", None)  # `import rouge_score_rs` raises ImportError
    assert rouge_fast.native() is None
    calls = []
    real = RougeScorer.score_multi

    def counted(self: RougeScorer, targets: list[str], prediction: str) -> dict:
        calls.append(prediction)
        return real(self, targets, prediction)

    monkeypatch.setattr(RougeScorer, "score_multi", counted)
    rows = metric_rows(TYPES, *data, tokenizer=tokenizer, use_stemmer=True)
    assert calls == data[0]  # the metric's rows came from rouge-score, one call per sample
    assert_bit_identical(rows, reference(TYPES, *data, tokenizer=tokenizer, use_stemmer=True))


def test_warnings_name_the_first_text_that_loses_letters() -> None:
    predictions = ["fine", "also fine", "ok"]
    references = [["fine"], ["x", "y"], ["z", "Привет", "..."]]
    with pytest.warns(UserWarning) as caught:
        ROUGE(ROUGE.Options(tokenizer="default")).sample_stats(predictions, references)
    messages = [str(w.message) for w in caught]
    assert "drops letters from 1 of 9 texts" in messages[0]
    assert "first: reference 1 of sample 2, 'Привет'" in messages[0]
    assert "first: reference 2 of sample 2, '...'" in messages[1]
