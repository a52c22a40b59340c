"""Tokenizers that see Chinese, Japanese and Korean text.

rouge-score's default tokenizer keeps only ``[a-z0-9]`` tokens, so any two
Chinese strings score 0. ``CJKTokenizer`` makes every CJK character one token
and leaves all other text to rouge-score's own tokenizer, so on text without
CJK characters it gives exactly rouge-score's tokens.
"""

from __future__ import annotations

import re

from rouge_score.tokenizers import DefaultTokenizer, Tokenizer

# Han (incl. extensions and compatibility ideographs), Hiragana, Katakana and
# Hangul letters. CJK punctuation (U+3000-303F, the Katakana middle dot U+30FB
# and the fullwidth forms) is deliberately left out: it is not a word.
_CJK_CLASS = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30fa\u30fc-\u30ff"  # Katakana without the middle dot
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\ua960-\ua97f"  # Hangul Jamo Extended-A
    "\uac00-\ud7af"  # Hangul syllables
    "\ud7b0-\ud7ff"  # Hangul Jamo Extended-B
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\uff66-\uff9f"  # Halfwidth Katakana
    "\uffa0-\uffdc"  # Halfwidth Hangul
    "\U00020000-\U0003134f"  # CJK Extensions B-G and compatibility supplement
)
_CJK_RE = re.compile(f"([{_CJK_CLASS}])")
# One CJK character, or a run of other word characters.
_WORD_RE = re.compile(rf"[{_CJK_CLASS}]|[^\W{_CJK_CLASS}]+")

CJK_LANGS = frozenset({"zh", "ja", "ko"})


def contains_cjk(text: str) -> bool:
    """True when ``text`` has at least one CJK letter (punctuation does not count)."""
    return _CJK_RE.search(text) is not None


def words(text: str) -> list[str]:
    """Word tokens for descriptors: each CJK character alone, other ``\\w+`` runs whole.

    Case is kept and punctuation dropped, so counts do not depend on a language setting.
    """
    return _WORD_RE.findall(text)


def primary_language(lang: str | None) -> str | None:
    """``"zh-CN"`` / ``"zh_Hans"`` / ``"ZH"`` -> ``"zh"``; None stays None."""
    if not lang:
        return None
    return re.split(r"[-_]", lang.strip().lower(), maxsplit=1)[0]


def is_cjk_language(lang: str | None) -> bool:
    """True for Chinese, Japanese and Korean language codes (with or without a region)."""
    return primary_language(lang) in CJK_LANGS


class CJKTokenizer(Tokenizer):
    """A rouge-score tokenizer: CJK characters become tokens, the rest is rouge-score's.

    Text between CJK characters goes through rouge-score's ``DefaultTokenizer``
    (lowercase, ``[a-z0-9]`` runs, Porter stemming of words longer than 3 when
    ``use_stemmer``), so English results are unchanged.
    """

    def __init__(self, use_stemmer: bool = False) -> None:
        self._default = DefaultTokenizer(use_stemmer)

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        # re.split with a capturing group alternates: other text, CJK char, other text, ...
        for i, piece in enumerate(_CJK_RE.split(text)):
            if i % 2:
                tokens.append(piece)
            elif piece:
                tokens.extend(self._default.tokenize(piece))
        return tokens
