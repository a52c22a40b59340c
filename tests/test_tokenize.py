from __future__ import annotations

import pytest
from rouge_score.tokenizers import DefaultTokenizer

from aigc_eval.metrics.tokenize import CJKTokenizer, contains_cjk, is_cjk_language, primary_language, words

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
