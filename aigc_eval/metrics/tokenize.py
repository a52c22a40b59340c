"""Tokenizers for ROUGE that keep every script's letters, and the accepted language codes.

rouge-score's default tokenizer keeps only ``[a-z0-9]`` tokens, so Chinese, Thai,
Russian, Hindi, ... text scores 0 even against itself. Three tokenizers, each a
superset of the one before: ``default`` (rouge-score's own), ``cjk``
(``CJKTokenizer``: every CJK character one token, the rest rouge-score's) and
``unicode`` (``UnicodeTokenizer``: CJK characters and grapheme clusters of the
unspaced Thai, Lao, Khmer and Myanmar scripts one token each, runs of other
letters, combining marks and digits one word). On a text where a smaller one drops
no letter, a larger one gives exactly its tokens, so choosing the smallest that
drops nothing never changes a score.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, Protocol

import regex

from aigc_eval.errors import UserError

# Han (incl. extensions and compatibility ideographs), Hiragana, Katakana and
# Hangul letters. CJK punctuation (U+3000-303F, the Katakana middle dot U+30FB
# and the fullwidth forms) is deliberately left out: it is not a word. The one CJK class of the
# package (a regex character-class body): the ROUGE tokenizers here and the report's word diff use it.
CJK_CLASS = (
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
_CJK_RE = re.compile(f"([{CJK_CLASS}])")
# One CJK character, or a run of other word characters.

CJK_LANGS = frozenset({"zh", "ja", "ko"})

# Scripts written without spaces between words: their grapheme clusters are the tokens, as CJK
# characters are. Marks that belong to them are part of their clusters, not of word runs.
_UNSPACED_CLASS = r"\p{Script=Thai}\p{Script=Lao}\p{Script=Khmer}\p{Script=Myanmar}"
_LETTER_CLASS = r"\p{L}\p{M}\p{N}"  # letters with their combining marks, and digits
_UNICODE_TOKEN_RE = regex.compile(
    rf"[{CJK_CLASS}]|(?=[{_UNSPACED_CLASS}])\X|[[{_LETTER_CLASS}]--[{CJK_CLASS}{_UNSPACED_CLASS}]]+",
    regex.V1,
)
_ASCII_WORD_RE = re.compile(r"[a-z0-9]+")
# Letters each tokenizer drops from lowercased text (the unicode tokenizer drops none).
_DROPPED_BY = {
    "default": regex.compile(rf"[[{_LETTER_CLASS}]--[a-z0-9]]", regex.V1),
    "cjk": regex.compile(rf"[[{_LETTER_CLASS}]--[a-z0-9{CJK_CLASS}]]", regex.V1),
}
_LETTER_RE = regex.compile(rf"[{_LETTER_CLASS}]")

RougeTokenizerName = Literal["default", "cjk", "unicode"]
ROUGE_TOKENIZERS: tuple[RougeTokenizerName, ...] = ("default", "cjk", "unicode")  # each keeps more


class WordTokenizer(Protocol):
    """Anything with rouge-score's ``tokenize``: its own tokenizers and rouge-score-rs's."""

    def tokenize(self, text: str) -> list[str]: ...


def contains_cjk(text: str) -> bool:
    """True when ``text`` has at least one CJK letter (punctuation does not count)."""
    return _CJK_RE.search(text) is not None


def words(text: str) -> list[str]:
    """Word tokens for descriptors: the unicode ROUGE tokenizer's segmentation with case kept.

    Each CJK character and each Thai/Lao/Khmer/Myanmar grapheme cluster alone, other runs of
    letters with their combining marks and digits whole (a Hindi word keeps its vowel signs);
    punctuation is dropped, so counts do not depend on a language setting.
    """
    return _UNICODE_TOKEN_RE.findall(text)


def dropped_letters(text: str, tokenizer: RougeTokenizerName) -> list[str]:
    """The letters, marks and digits of ``text`` that ``tokenizer`` drops (lowercased, in order)."""
    pattern = _DROPPED_BY.get(tokenizer)
    # ASCII letters and digits lowercase to [a-z0-9], which every tokenizer keeps (and isascii is O(1)).
    return pattern.findall(text.lower()) if pattern and not text.isascii() else []


def has_letters(text: str) -> bool:
    """True when ``text`` has a letter, mark or digit: the unicode tokenizer makes a token of it."""
    return _LETTER_RE.search(text) is not None


def smallest_tokenizer(texts: Iterable[str]) -> RougeTokenizerName:
    """The first of default, cjk, unicode that drops no letter of any text.

    Each is a superset of the one before, so the choice gives every text the tokens the unicode
    tokenizer would, and rouge-score's own tokenizer (and exact results) wherever it suffices.
    """
    needed = 0
    for text in texts:
        if text.isascii():  # only [A-Za-z0-9] letters: the default tokenizer keeps them all
            continue
        lowered = text.lower()
        while needed < 2 and _DROPPED_BY[ROUGE_TOKENIZERS[needed]].search(lowered):
            needed += 1
        if needed == 2:
            break
    return ROUGE_TOKENIZERS[needed]


def rouge_tokenizer_for_language(lang: str) -> RougeTokenizerName:
    """A fixed choice per language, so every corpus of that language is signed alike.

    English keeps rouge-score's tokenizer (its published numbers), Chinese, Japanese and Korean
    the CJK one, every other language the unicode one (accents, other scripts, no spaces).
    """
    primary = primary_language(lang)
    if primary == "en":
        return "default"
    return "cjk" if primary in CJK_LANGS else "unicode"


# ISO 639-1, the codes `lang` accepts (with an optional script/region: zh-Hans, zh-CN, pt_BR).
_ISO_639_1 = (
    "aa Afar|ab Abkhazian|ae Avestan|af Afrikaans|ak Akan|am Amharic|an Aragonese|ar Arabic|"
    "as Assamese|av Avaric|ay Aymara|az Azerbaijani|ba Bashkir|be Belarusian|bg Bulgarian|bi Bislama|"
    "bm Bambara|bn Bengali|bo Tibetan|br Breton|bs Bosnian|ca Catalan|ce Chechen|ch Chamorro|"
    "co Corsican|cr Cree|cs Czech|cu Church Slavic|cv Chuvash|cy Welsh|da Danish|de German|dv Divehi|"
    "dz Dzongkha|ee Ewe|el Greek|en English|eo Esperanto|es Spanish|et Estonian|eu Basque|fa Persian|"
    "ff Fulah|fi Finnish|fj Fijian|fo Faroese|fr French|fy Western Frisian|ga Irish|gd Scottish Gaelic|"
    "gl Galician|gn Guarani|gu Gujarati|gv Manx|ha Hausa|he Hebrew|hi Hindi|ho Hiri Motu|hr Croatian|"
    "ht Haitian|hu Hungarian|hy Armenian|hz Herero|ia Interlingua|id Indonesian|ie Interlingue|ig Igbo|"
    "ii Sichuan Yi|ik Inupiaq|io Ido|is Icelandic|it Italian|iu Inuktitut|ja Japanese|jv Javanese|"
    "ka Georgian|kg Kongo|ki Kikuyu|kj Kuanyama|kk Kazakh|kl Kalaallisut|km Khmer|kn Kannada|ko Korean|"
    "kr Kanuri|ks Kashmiri|ku Kurdish|kv Komi|kw Cornish|ky Kyrgyz|la Latin|lb Luxembourgish|lg Ganda|"
    "li Limburgish|ln Lingala|lo Lao|lt Lithuanian|lu Luba-Katanga|lv Latvian|mg Malagasy|"
    "mh Marshallese|mi Maori|mk Macedonian|ml Malayalam|mn Mongolian|mr Marathi|ms Malay|mt Maltese|"
    "my Burmese|na Nauru|nb Norwegian Bokmal|nd North Ndebele|ne Nepali|ng Ndonga|nl Dutch|"
    "nn Norwegian Nynorsk|no Norwegian|nr South Ndebele|nv Navajo|ny Chichewa|oc Occitan|oj Ojibwa|"
    "om Oromo|or Odia|os Ossetian|pa Punjabi|pi Pali|pl Polish|ps Pashto|pt Portuguese|qu Quechua|"
    "rm Romansh|rn Rundi|ro Romanian|ru Russian|rw Kinyarwanda|sa Sanskrit|sc Sardinian|sd Sindhi|"
    "se Northern Sami|sg Sango|si Sinhala|sk Slovak|sl Slovenian|sm Samoan|sn Shona|so Somali|"
    "sq Albanian|sr Serbian|ss Swati|st Southern Sotho|su Sundanese|sv Swedish|sw Swahili|ta Tamil|"
    "te Telugu|tg Tajik|th Thai|ti Tigrinya|tk Turkmen|tl Tagalog|tn Tswana|to Tonga|tr Turkish|"
    "ts Tsonga|tt Tatar|tw Twi|ty Tahitian|ug Uyghur|uk Ukrainian|ur Urdu|uz Uzbek|ve Venda|"
    "vi Vietnamese|vo Volapuk|wa Walloon|wo Wolof|xh Xhosa|yi Yiddish|yo Yoruba|za Zhuang|zh Chinese|"
    "zu Zulu"
)
LANGUAGES: dict[str, str] = dict(entry.split(" ", 1) for entry in _ISO_639_1.split("|"))
# Withdrawn ISO 639-1 codes still in use (Java, old browsers) -> their current codes.
_RENAMED = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}
_SUBTAG_RE = re.compile(r"[A-Za-z0-9]{1,8}")


def normalize_lang(code: str) -> str:
    """``"ZH"`` -> ``"zh"``, ``"pt_br"`` -> ``"pt-BR"``, ``"zh-hans"`` -> ``"zh-Hans"``, ``"iw"`` -> ``"he"``.

    Raises ValueError naming the accepted codes for anything that is not an ISO 639-1 code with
    optional BCP 47 subtags: a misspelt language must not silently pick the wrong tokenizers.
    """
    parts = re.split(r"[-_]", code.strip())
    primary = _RENAMED.get(parts[0].lower(), parts[0].lower())
    if primary not in LANGUAGES or not all(_SUBTAG_RE.fullmatch(p) for p in parts[1:]):
        raise ValueError(_unknown_language(code))
    subtags = [
        p.title() if len(p) == 4 and p.isalpha() else p.upper() if len(p) == 2 else p.lower()
        for p in parts[1:]
    ]
    return "-".join([primary, *subtags])


def _unknown_language(code: str) -> str:
    guess = [c for c, name in LANGUAGES.items() if name.lower() == code.strip().lower()]
    hint = f"did you mean {guess[0]!r} ({LANGUAGES[guess[0]]})? " if guess else ""
    return (
        f"unknown language code {code!r}; {hint}use an ISO 639-1 code, optionally with a region or "
        f"script (zh-CN, pt_BR, zh-Hans): {' '.join(LANGUAGES)}"
    )


def language_option(code: str | None, where: str) -> str | None:
    """``normalize_lang`` for a setting named ``where`` (``--lang``, ``rouge``): a UserError if bad."""
    if code is None:
        return None
    try:
        return normalize_lang(code)
    except ValueError as error:
        raise UserError(f"{where}: {error}") from None


def primary_language(lang: str | None) -> str | None:
    """``"zh-CN"`` / ``"zh_Hans"`` / ``"ZH"`` -> ``"zh"``; None stays None."""
    if not lang:
        return None
    return re.split(r"[-_]", lang.strip().lower(), maxsplit=1)[0]


def is_cjk_language(lang: str | None) -> bool:
    """True for Chinese, Japanese and Korean language codes (with or without a region)."""
    return primary_language(lang) in CJK_LANGS


class CJKTokenizer:
    """A tokenizer for rouge-score's scorers: CJK characters become tokens, the rest is rouge-score's.

    Text between CJK characters goes through rouge-score's ``DefaultTokenizer``
    (lowercase, ``[a-z0-9]`` runs, Porter stemming of words longer than 3 when
    ``use_stemmer``), so English results are unchanged. ``default`` replaces that
    tokenizer with one that gives the same tokens (rouge-score-rs's, in Rust).
    """

    def __init__(self, use_stemmer: bool = False, default: WordTokenizer | None = None) -> None:
        self._default = default or _rouge_score_default(use_stemmer)

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        # re.split with a capturing group alternates: other text, CJK char, other text, ...
        for i, piece in enumerate(_CJK_RE.split(text)):
            if i % 2:
                tokens.append(piece)
            elif piece:
                tokens.extend(self._default.tokenize(piece))
        return tokens


class UnicodeTokenizer:
    """A tokenizer for rouge-score's scorers and every script: no letter, mark or digit is dropped.

    Case-folded text becomes tokens: each CJK character, each grapheme cluster of Thai, Lao, Khmer
    and Myanmar (written without spaces), and each run of other letters with their combining marks
    and digits (Cyrillic, Arabic, Devanagari, Greek, accented Latin words, ...). Porter stemming,
    when on, applies to ``[a-z0-9]`` words longer than 3, as in rouge-score, so a text its default
    (or the CJK) tokenizer keeps whole gets exactly that tokenizer's tokens. ``default``, as in
    ``CJKTokenizer``, stems through an equal tokenizer instead of rouge-score's.
    """

    def __init__(self, use_stemmer: bool = False, default: WordTokenizer | None = None) -> None:
        self._default = default or _rouge_score_default(use_stemmer)
        self._stem = use_stemmer

    def tokenize(self, text: str) -> list[str]:
        tokens = _UNICODE_TOKEN_RE.findall(text.casefold())
        if not self._stem:
            return tokens
        return [
            self._default.tokenize(t)[0] if len(t) > 3 and _ASCII_WORD_RE.fullmatch(t) else t for t in tokens
        ]


def rouge_tokenizer(
    name: RougeTokenizerName, use_stemmer: bool = False, default: WordTokenizer | None = None
) -> WordTokenizer:
    """The tokenizer object for a name in ``ROUGE_TOKENIZERS``.

    ``default`` stands for rouge-score's ``DefaultTokenizer(use_stemmer)`` (and inside the CJK and
    unicode tokenizers): pass a tokenizer that gives the same tokens, such as rouge-score-rs's.
    """
    if name == "unicode":
        return UnicodeTokenizer(use_stemmer, default)
    if name == "cjk":
        return CJKTokenizer(use_stemmer, default)
    return default or _rouge_score_default(use_stemmer)


def _rouge_score_default(use_stemmer: bool) -> WordTokenizer:
    """rouge-score's ``DefaultTokenizer``, imported on first use: it imports NLTK (and SciPy's
    statistics), a second that runs without ROUGE, or on rouge-score-rs's tokenizer, never need."""
    from rouge_score.tokenizers import DefaultTokenizer

    return DefaultTokenizer(use_stemmer)
