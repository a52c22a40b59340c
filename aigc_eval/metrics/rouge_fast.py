"""ROUGE rows from rouge-score-rs (Rust): rouge-score's floats, bit for bit, 40x+ faster.

rouge-score-rs ports rouge-score's tokenizer, NLTK's Porter stemmer and its scoring; it and
``tests/test_rouge_fast.py`` check every float against rouge-score itself. Two routes:

* tokenizer ``default`` without ``split_summaries``: the raw texts go to the Rust scorer, which
  tokenizes, stems and scores all pairs in one ``score_batch`` call;
* the ``cjk`` and ``unicode`` tokenizers, and ``split_summaries``: rouge-score-rs has no tokenizer
  that splits like ours (its Unicode profiles apply NFKC and keep ``don't`` and ``3.50`` whole),
  so ours run in Python, their ASCII words through rouge-score-rs's native tokenizer and stemmer.
  Each distinct token becomes a decimal word, which the Rust scorer's tokenizer (without
  stemming: the tokens are stemmed already; digits have no case) maps 1:1 back onto it, one
  line per sentence for rougeLsum.

Several references of a sample are scored as separate pairs and, per ROUGE type, the first
with the highest F is kept: rouge-score's ``score_multi`` (``np.argmax``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np

from aigc_eval.metrics.base import References
from aigc_eval.metrics.tokenize import RougeTokenizerName, rouge_tokenizer

_FIELDS = 3  # precision, recall, fmeasure: the order of rouge-score's Score


def native() -> ModuleType | None:
    """The rouge_score_rs module when it imports (looked up per call, so tests can hide it)."""
    try:
        import rouge_score_rs
    except ImportError:
        return None
    return rouge_score_rs


class _Ids(dict[str, str]):
    """Token -> its decimal surrogate word, numbered in order of first appearance."""

    def __missing__(self, token: str) -> str:
        word = self[token] = str(len(self))
        return word


def score_rows(
    rs: ModuleType,
    rouge_types: Sequence[str],
    predictions: Sequence[str],
    references: References,
    tokenizer: RougeTokenizerName,
    use_stemmer: bool,
    split_summaries: bool,
) -> np.ndarray:
    """[n, 3 * len(rouge_types)] precision, recall, F per type, as rouge-score's ``score_multi``.

    ``rs`` is ``native()``'s module; every sample has at least one reference (``check_aligned``).
    """
    types = list(rouge_types)
    counts = np.array([len(refs) for refs in references], dtype=np.intp)
    flat_refs = [r for refs in references for r in refs]
    flat_preds = [p for p, refs in zip(predictions, references, strict=True) for _ in refs]
    if not flat_refs:
        return np.empty((len(counts), _FIELDS * len(types)))
    if tokenizer == "default" and not split_summaries:
        results = rs.RougeScorer(types, use_stemmer=use_stemmer).score_batch(flat_refs, flat_preds)
    else:
        native_words = rs.tokenizers.DefaultTokenizer(use_stemmer)
        words = rouge_tokenizer(tokenizer, use_stemmer, native_words).tokenize
        results = _score_tokens(rs, types, flat_refs, flat_preds, words, split_summaries)
    values = np.fromiter(
        itertools.chain.from_iterable(pair[t] for pair in results for t in types),
        dtype=np.float64,
        count=len(results) * len(types) * _FIELDS,
    ).reshape(len(results), len(types), _FIELDS)
    return _best_per_type(values, counts).reshape(len(counts), -1)


def _score_tokens(
    rs: ModuleType,
    types: list[str],
    refs: list[str],
    preds: list[str],
    words: Callable[[str], list[str]],
    split_summaries: bool,
) -> list[dict]:
    """Score pairs through surrogate texts of our tokens (see the module docstring)."""
    ids = _Ids()

    def encode(text: str) -> str:
        return " ".join(map(ids.__getitem__, words(text)))

    def sentences(text: str) -> str:
        # rouge-score's rougeLsum: newline-separated (or nltk) sentences, empty strings dropped.
        parts = _sent_tokenize(text) if split_summaries else text.split("\n")
        return "\n".join(encode(s) for s in parts if s)

    summary = [t for t in types if t == "rougeLsum"]
    others = [t for t in types if t != "rougeLsum"]
    if summary and split_summaries and others:
        # nltk's sentences need not cut the text at token boundaries: the other types get the
        # whole text's tokens, as in rouge-score. Newline splitting always cuts between tokens
        # (no token holds a newline), so one surrogate serves every type there.
        groups = [(others, encode), (summary, sentences)]
    else:
        groups = [(types, sentences if summary else encode)]
    results: list[dict] = [{} for _ in refs]
    for group_types, surrogate in groups:
        memo: dict[str, str] = {}
        for text in itertools.chain(refs, preds):
            if text not in memo:
                memo[text] = surrogate(text)
        scorer = rs.RougeScorer(group_types)  # no stemming: the tokens are final
        scored = scorer.score_batch([memo[r] for r in refs], [memo[p] for p in preds])
        for merged, pair in zip(results, scored, strict=True):
            merged.update(pair)
    return results


def _best_per_type(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per sample and type, the (P, R, F) of its first reference with the highest F."""
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    best = values[starts]
    for i in np.flatnonzero(counts > 1):
        block = values[starts[i] : starts[i] + counts[i]]
        pick = np.argmax(block[:, :, 2], axis=0)  # the first maximum, as rouge-score
        best[i] = block[pick, np.arange(block.shape[1])]
    return best


def _sent_tokenize(text: str) -> list[str]:
    import nltk  # with SciPy's statistics: 1 s, so only for split_summaries

    return nltk.sent_tokenize(text)
