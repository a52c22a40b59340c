from __future__ import annotations

import pytest
from rouge_score.tokenizers import DefaultTokenizer

from aigc_eval.metrics.tokenize import (
    LANGUAGES,
    CJKTokenizer,
    UnicodeTokenizer,
    contains_cjk,
    dropped_letters,
    is_cjk_language,
    normalize_lang,
    primary_language,
    smallest_tokenizer,
    words,
)

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Running runners ran; it's 2024-05-01, e-mail me at A.B@x.org!",
    "Café naïve façade — ÜBER straße",
    "",
    "   ",
    "one",
]


@pytest.mark.parametrize("use_stemmer", [False, True])
@pytest.mark.parametrize("text", ENGLISH)
def test_equals_rouge_score_default_without_cjk(text: str, use_stemmer: bool) -> None:
    assert CJKTokenizer(use_stemmer).tokenize(text) == DefaultTokenizer(use_stemmer).tokenize(text)


def test_chinese_characters_are_tokens_and_punctuation_is_dropped() -> None:
    assert CJKTokenizer().tokenize("今天天气很好。") == ["今", "天", "天", "气", "很", "好"]


def test_mixed_text_keeps_lowercased_ascii_words() -> None:
    assert CJKTokenizer().tokenize("我用GPT-4模型，Score很高") == [
        "我",
        "用",
        "gpt",
        "4",
        "模",
        "型",
        "score",
        "很",
        "高",
    ]


def test_stemming_applies_to_ascii_words_only() -> None:
    assert CJKTokenizer(use_stemmer=True).tokenize("running的models") == ["run", "的", "model"]


def test_japanese_and_korean_characters() -> None:
    assert CJKTokenizer().tokenize("カタカナ・ひらがな 한국어") == [
        *"カタカナ",
        *"ひらがな",
        *"한국어",
    ]


def test_contains_cjk_ignores_cjk_punctuation() -> None:
    assert contains_cjk("hello 世界")
    assert contains_cjk("ひ")
    assert contains_cjk("한")
    assert not contains_cjk("hello, world")
    assert not contains_cjk("「」。、")
    assert not contains_cjk("")


def test_words_splits_cjk_and_keeps_unicode_words() -> None:
    assert words("Hello, 世界! Café x2") == ["Hello", "世", "界", "Café", "x2"]
    assert words("我爱NLP。") == ["我", "爱", "NLP"]
    assert words("  ...  ") == []


@pytest.mark.parametrize(
    ("lang", "primary", "cjk"),
    [
        ("zh", "zh", True),
        ("zh-CN", "zh", True),
        ("ja_JP", "ja", True),
        ("KO", "ko", True),
        ("en", "en", False),
    ],
)
def test_language_codes(lang: str, primary: str, cjk: bool) -> None:
    assert primary_language(lang) == primary
    assert is_cjk_language(lang) is cjk


def test_no_language() -> None:
    assert primary_language(None) is None
    assert not is_cjk_language(None)


LATIN = [*ENGLISH, "x_2 A.B", "ﬁ", "K"]  # with the fi ligature and the Kelvin sign


@pytest.mark.parametrize("use_stemmer", [False, True])
@pytest.mark.parametrize("text", LATIN)
def test_unicode_tokenizer_equals_rouge_score_default_where_it_drops_nothing(
    text: str, use_stemmer: bool
) -> None:
    if dropped_letters(text, "default"):
        assert UnicodeTokenizer(use_stemmer).tokenize(text) != DefaultTokenizer(use_stemmer).tokenize(text)
    else:
        assert UnicodeTokenizer(use_stemmer).tokenize(text) == DefaultTokenizer(use_stemmer).tokenize(text)


@pytest.mark.parametrize("use_stemmer", [False, True])
@pytest.mark.parametrize("text", ["我用GPT-4模型，Score很高", "running的models", "カタカナ・ひらがな 한국어"])
def test_unicode_tokenizer_equals_the_cjk_one_on_cjk_and_ascii(text: str, use_stemmer: bool) -> None:
    assert not dropped_letters(text, "cjk")
    assert UnicodeTokenizer(use_stemmer).tokenize(text) == CJKTokenizer(use_stemmer).tokenize(text)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("हिन्दी भाषा।", ["हिन्दी", "भाषा"]),  # vowel signs and virama stay in the word
        ("น้ำเย็น", ["น้ำ", "เ", "ย็", "น"]),  # Thai: one token per grapheme cluster
        ("Привет, МИР! Café", ["привет", "мир", "café"]),
        ("ΟΔΟΣ οδός", ["οδοσ", "οδόσ"]),  # case folding merges final and medial sigma
        ("مرحبا بالعالم", ["مرحبا", "بالعالم"]),
        ("今天 Кошка", ["今", "天", "кошка"]),
    ],
)
def test_unicode_tokenizer_keeps_every_script(text: str, tokens: list[str]) -> None:
    assert UnicodeTokenizer().tokenize(text) == tokens


def test_stemming_applies_to_ascii_words_only_in_the_unicode_tokenizer() -> None:
    assert UnicodeTokenizer(use_stemmer=True).tokenize("running бегущий cafés models") == [
        "run",
        "бегущий",
        "cafés",
        "model",
    ]


def test_dropped_letters_and_the_smallest_tokenizer() -> None:
    assert dropped_letters("Café 今天 Кот", "default") == ["é", "今", "天", "к", "о", "т"]
    assert dropped_letters("Café 今天 Кот", "cjk") == ["é", "к", "о", "т"]
    assert dropped_letters("Café 今天 Кот", "unicode") == []
    assert smallest_tokenizer(["Hello, world!", "2024"]) == "default"
    assert smallest_tokenizer(["Hello", "今天"]) == "cjk"
    assert smallest_tokenizer(["今天", "Café"]) == "unicode"
    assert smallest_tokenizer([]) == "default"


@pytest.mark.parametrize(
    ("code", "normal"),
    [
        ("zh", "zh"),
        ("ZH", "zh"),
        (" en ", "en"),
        ("zh_cn", "zh-CN"),
        ("pt-br", "pt-BR"),
        ("zh-hant", "zh-Hant"),
        ("es-419", "es-419"),
        ("sr_Latn_RS", "sr-Latn-RS"),
        ("iw", "he"),
        ("in", "id"),
    ],
)
def test_normalize_lang(code: str, normal: str) -> None:
    assert normalize_lang(code) == normal


@pytest.mark.parametrize("code", ["klingon", "chinese", "", "zh-", "eng", "zz", "zh-CN!"])
def test_unknown_language_codes_list_the_accepted_ones(code: str) -> None:
    with pytest.raises(ValueError, match=r"unknown language code .*ISO 639-1.*: aa ab .* zh zu$"):
        normalize_lang(code)


def test_language_names_suggest_their_code() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'ru' \(Russian\)\?"):
        normalize_lang("russian")
    assert len(LANGUAGES) == 183 and all(len(c) == 2 and c.islower() for c in LANGUAGES)
