"""ROUGE with rouge-score's exact numbers, a tokenizer that sees every script's letters, and Rust speed.

Rows come from rouge-score-rs (``aigc_eval.metrics.rouge_fast``) when it imports, else from
rouge-score's ``RougeScorer``; the two give equal floats (``tests/test_rouge_fast.py``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from aigc_eval.errors import UserError
from aigc_eval.metrics import rouge_fast
from aigc_eval.metrics.base import Metric, MetricContext, References, SampleInputs, Score, check_aligned
from aigc_eval.metrics.registry import metrics
from aigc_eval.metrics.sacrebleu_metrics import nrefs_label
from aigc_eval.metrics.tokenize import (
    ROUGE_TOKENIZERS,
    RougeTokenizerName,
    dropped_letters,
    has_letters,
    language_option,
    rouge_tokenizer,
    rouge_tokenizer_for_language,
    smallest_tokenizer,
)

_ROUGE_TYPE = re.compile(r"rouge[1-9]|rougeL|rougeLsum")
_FIELDS = ("precision", "recall", "fmeasure")
_DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_ROUGE_SCORE_VERSION = version("rouge-score")  # read once: aggregate runs per resample


@metrics.register("rouge")
class ROUGE(Metric):
    """ROUGE-N/L/Lsum; several references use ``score_multi`` (best F per type).

    The tokenizer is chosen once per corpus, so all its samples are scored alike:
    the ``tokenizer`` option when set, else fixed by ``lang`` (en: rouge-score's
    ``default``, zh/ja/ko: ``cjk``, any other language: ``unicode``), else the
    smallest of default, cjk, unicode that drops no letter of any prediction or
    reference (see ``aigc_eval.metrics.tokenize``: that choice scores every text as
    the unicode tokenizer would, and pure ASCII text exactly as rouge-score does).
    A text that loses letters or has no token at all is warned about, never a
    silent 0.

    Each row holds precision, recall and F per ROUGE type, then the sample's
    reference count and the tokenizer's index in ``ROUGE_TOKENIZERS`` (0 default,
    1 cjk, 2 unicode), so ``aggregate`` can write the signature from rows alone.
    The corpus value is the mean F.

    The signature names rouge-score whichever library made the rows: rouge-score-rs reproduces
    its floats exactly, so runs scored by either compare (the run's environment lists both).
    """

    name = "rouge"
    outputs = _DEFAULT_TYPES
    description = (
        "rouge-score F-measure per sample (the best reference when there are several), averaged over "
        "samples; CJK text is split into characters so it is not one long token. Computed by "
        "rouge-score-rs (Rust, the same floats) where it is installed."
    )

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        rouge_types: tuple[str, ...] = _DEFAULT_TYPES
        use_stemmer: bool = False
        # auto: from lang, else the smallest tokenizer that keeps every letter of the corpus.
        tokenizer: Literal["auto", "default", "cjk", "unicode"] = "auto"
        split_summaries: bool = False

    def __init__(
        self, options: Options | None = None, lang: str | None = None, context: MetricContext | None = None
    ) -> None:
        super().__init__(options, lang, context)
        bad = [t for t in self.options.rouge_types if not _ROUGE_TYPE.fullmatch(t)]
        if bad or not self.options.rouge_types:
            raise UserError(
                f"rouge: invalid rouge_types {bad or '[]'}; use some of rouge1..rouge9, rougeL, rougeLsum"
            )
        if self.options.split_summaries:
            _require_punkt()
        self.outputs = tuple(self.options.rouge_types)
        self.lang = language_option(lang, "rouge: lang")

    def _choose(self, texts: list[str]) -> tuple[RougeTokenizerName, str]:
        """The corpus's tokenizer and why it was chosen (for warnings)."""
        if self.options.tokenizer != "auto":
            return self.options.tokenizer, "the rouge option tokenizer"
        if self.lang is not None:
            return rouge_tokenizer_for_language(self.lang), f"lang {self.lang}"
        return smallest_tokenizer(texts), "auto"

    def sample_stats(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        check_aligned(predictions, references)
        texts = [*predictions, *(r for refs in references for r in refs)]
        tokenizer, why = self._choose(texts)
        _warn_lost_text(texts, references, tokenizer, why)
        rs = rouge_fast.native()
        if rs is not None:
            scores = rouge_fast.score_rows(
                rs,
                self.outputs,
                predictions,
                references,
                tokenizer,
                self.options.use_stemmer,
                self.options.split_summaries,
            )
        else:
            scores = self._rouge_score_rows(predictions, references, tokenizer)
        nrefs = np.array([len(refs) for refs in references], dtype=np.float64)
        code = np.full(len(nrefs), ROUGE_TOKENIZERS.index(tokenizer), dtype=np.float64)
        return np.column_stack([scores, nrefs, code])

    def _rouge_score_rows(
        self, predictions: Sequence[str], references: References, tokenizer: RougeTokenizerName
    ) -> np.ndarray:
        """P/R/F per type from rouge-score itself: the fallback without rouge-score-rs."""
        from rouge_score.rouge_scorer import RougeScorer  # imports NLTK and SciPy: 1 s, when needed

        scorer = RougeScorer(
            list(self.outputs),
            split_summaries=self.options.split_summaries,
            tokenizer=rouge_tokenizer(tokenizer, self.options.use_stemmer),
        )
        rows = []
        for prediction, refs in zip(predictions, references, strict=True):
            best = scorer.score_multi(list(refs), prediction)
            rows.append([getattr(best[t], f) for t in self.outputs for f in _FIELDS])
        return np.array(rows, dtype=np.float64).reshape(len(rows), 3 * len(self.outputs))

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        if len(stats) == 0:
            raise ValueError("rouge: no samples to aggregate")
        signature = self.signature(stats)
        means = self._means(stats)
        return {
            rouge_type: Score(
                name=rouge_type,
                score=float(means[i, 2]),
                signature=signature,
                details={"precision": float(means[i, 0]), "recall": float(means[i, 1])},
            )
            for i, rouge_type in enumerate(self.outputs)
        }

    def values(self, stats: np.ndarray) -> dict[str, float]:
        fmeasures = self._means(stats)[:, 2]
        return {rouge_type: float(f) for rouge_type, f in zip(self.outputs, fmeasures, strict=True)}

    def stacked_values(self, stack: np.ndarray) -> dict[str, np.ndarray]:
        """Mean F of every row set at once: each set's F column summed along a contiguous axis, as
        ``_means`` sums it, so every value equals ``values`` of that set bit for bit."""
        width = 3 * len(self.outputs)
        fmeasures = np.ascontiguousarray(stack[:, :, 2:width:3].transpose(0, 2, 1), dtype=np.float64)
        means = fmeasures.mean(axis=2)
        return {rouge_type: means[:, i] for i, rouge_type in enumerate(self.outputs)}

    def _means(self, stats: np.ndarray) -> np.ndarray:
        """Mean P/R/F per ROUGE type (types × 3). Each column is summed along a contiguous axis, so
        numpy sums exactly as np.mean over a list of the same values (pairwise)."""
        columns = np.ascontiguousarray(stats[:, : 3 * len(self.outputs)].T, dtype=np.float64)
        return columns.mean(axis=1).reshape(len(self.outputs), 3)

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {t: stats[:, 3 * i + 2].tolist() for i, t in enumerate(self.outputs)}

    def signature(self, stats: np.ndarray) -> str:
        """Library version, tokenizer, stemming and reference count of these rows."""
        if len(stats) == 0:
            raise ValueError("rouge: the tokenizer and reference count are unknown without rows")
        # Rows scored by a smaller tokenizer (another auto call) lost no letter: the largest agrees.
        tokenizer = ROUGE_TOKENIZERS[int(stats[:, -1].max())]
        nrefs = nrefs_label(stats[:, -2])
        refs = "1" if nrefs == 1 else f"max{nrefs}"
        parts = [
            f"rouge-score:{_ROUGE_SCORE_VERSION}",
            f"tok:{tokenizer}",
            f"stem:{'yes' if self.options.use_stemmer else 'no'}",
            f"nrefs:{refs}",
            "agg:mean-f",
        ]
        if self.options.split_summaries:
            parts.append("split:yes")
        return "|".join(parts)


def _warn_lost_text(
    texts: list[str], references: References, tokenizer: RougeTokenizerName, why: str
) -> None:
    """Warn when the tokenizer drops letters of some texts or makes no token of a non-empty one.

    ``texts`` are the predictions, then every reference in order (``_where`` names one).
    """
    lossy = [(k, lost) for k, text in enumerate(texts) if (lost := dropped_letters(text, tokenizer))]
    if lossy:
        k, lost = lossy[0]
        letters = "".join(dict.fromkeys(lost))[:20]
        warnings.warn(
            f"rouge: tokenizer {tokenizer!r} (from {why}) drops letters from {len(lossy)} of {len(texts)} "
            f"texts, which then score lower or 0 (first: {_where(k, references)}, {_clip(texts[k])}, "
            f"loses {letters!r}); set the rouge option `tokenizer: unicode` to keep them",
            stacklevel=3,
        )
    # Letters of a text that lost none are all kept: only a text without any has no token.
    empty = [k for k, text in enumerate(texts) if text.strip() and not has_letters(text)]
    if empty:
        k = empty[0]
        warnings.warn(
            f"rouge: {len(empty)} of {len(texts)} texts are not empty but have no letter or digit, "
            f"so score 0 (first: {_where(k, references)}, {_clip(texts[k])})",
            stacklevel=3,
        )


def _where(index: int, references: References) -> str:
    """Name text ``index`` of the predictions-then-references list (labels only for warnings)."""
    if index < len(references):
        return f"prediction {index}"
    index -= len(references)
    for i, refs in enumerate(references):
        if index < len(refs):
            return f"reference {index} of sample {i}"
        index -= len(refs)
    raise IndexError(index)


def _clip(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _require_punkt() -> None:
    """split_summaries uses nltk.sent_tokenize, whose model is a separate download."""
    import nltk  # with SciPy's statistics: 1 s, so only for split_summaries

    try:
        nltk.sent_tokenize("One. Two.")
    except LookupError as exc:
        raise UserError(
            "rouge: split_summaries needs NLTK's sentence model; run "
            "`python -m nltk.downloader punkt_tab` or set the rouge option split_summaries to false"
        ) from exc
