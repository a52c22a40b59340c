"""Word and character diffs of a prediction against its reference, for the sample browser.

Segments are ``[op, text]``: 0 shared, 1 only in the prediction, -1 only in the reference. Words
are compared without their surrounding whitespace, and each CJK character is a word (the CJK class
is the tokenizers', ``aigc_eval.metrics.tokenize.CJK_CLASS``).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from aigc_eval.metrics.tokenize import CJK_CLASS

# A word, a CJK character or a punctuation mark, each with the whitespace before it; then trailing space.
_TOKEN = re.compile(rf"\s*(?:[{CJK_CLASS}]|[^\s{CJK_CLASS}\W]+|[^\w\s])|\s+$")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def closest(text: str, refs: list[str]) -> int:
    """Index of the reference the prediction is nearest to (word-level), to diff against it."""
    if len(refs) < 2:
        return 0
    words = [t.strip() for t in tokens(text)]
    ratios = [
        difflib.SequenceMatcher(None, [t.strip() for t in tokens(r)], words, autojunk=False).ratio()
        for r in refs
    ]
    return ratios.index(max(ratios))


def word_diff(reference: str, prediction: str) -> list[list[Any]]:
    """Segments word by word; a leading space is not a change."""
    ref, pred = tokens(reference), tokens(prediction)
    return _segments(ref, pred, [t.strip() for t in ref], [t.strip() for t in pred])


def char_diff(reference: str, prediction: str) -> list[list[Any]]:
    """Like ``word_diff`` but character by character, whitespace included."""
    return _segments(list(reference), list(prediction), list(reference), list(prediction))


def _segments(a: list[str], b: list[str], keys_a: list[str], keys_b: list[str]) -> list[list[Any]]:
    out: list[list[Any]] = []

    def add(op: int, text: str) -> None:
        if not text:
            return
        if out and out[-1][0] == op:
            out[-1][1] += text
        else:
            out.append([op, text])

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False).get_opcodes():
        if tag == "equal":
            add(0, "".join(b[j1:j2]))
        else:
            add(-1, "".join(a[i1:i2]))
            add(1, "".join(b[j1:j2]))
    return out
