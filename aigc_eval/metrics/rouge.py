"""ROUGE through rouge-score's ``RougeScorer``, with a tokenizer that sees CJK text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib.metadata import version
from typing import Literal

import nltk
import numpy as np
from pydantic import BaseModel, ConfigDict
from rouge_score.rouge_scorer import RougeScorer

from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric, References, Score, check_aligned
from aigc_eval.metrics.sacrebleu_metrics import nrefs_label
from aigc_eval.metrics.tokenize import CJKTokenizer, contains_cjk, is_cjk_language

_ROUGE_TYPE = re.compile(r"rouge[1-9]|rougeL|rougeLsum")
_FIELDS = ("precision", "recall", "fmeasure")
_DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_ROUGE_SCORE_VERSION = version("rouge-score")  # read once: aggregate runs per resample


class ROUGE(Metric):
    """ROUGE-N/L/Lsum; several references use ``score_multi`` (best F per type).

    Each row holds precision, recall and F per ROUGE type, then the sample's
    reference count and whether the CJK tokenizer scored it, so ``aggregate``
    can write the signature from rows alone. The corpus value is the mean F.
    """

    name = "rouge"
    outputs = _DEFAULT_TYPES

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        rouge_types: tuple[str, ...] = _DEFAULT_TYPES
        use_stemmer: bool = False
        # auto: cjk for zh/ja/ko or when the texts contain CJK characters; default: rouge-score's own.
        tokenizer: Literal["auto", "default", "cjk"] = "auto"
        split_summaries: bool = False

    def __init__(self, options: Options | None = None, lang: str | None = None) -> None:
        self.options = options or self.Options()
        bad = [t for t in self.options.rouge_types if not _ROUGE_TYPE.fullmatch(t)]
        if bad or not self.options.rouge_types:
            raise UserError(
                f"rouge: invalid rouge_types {bad or '[]'}; use some of rouge1..rouge9, rougeL, rougeLsum"
            )
        if self.options.split_summaries:
            _require_punkt()
        self.outputs = tuple(self.options.rouge_types)
        self._cjk_lang = is_cjk_language(lang)
        self._last: tuple[str, int | str] | None = None  # (tokenizer, nrefs) of the rows seen last

    def _use_cjk(self, predictions: Sequence[str], references: References) -> bool:
        if self.options.tokenizer != "auto":
            return self.options.tokenizer == "cjk"
        return (
            self._cjk_lang
            or any(contains_cjk(p) for p in predictions)
            or any(contains_cjk(r) for refs in references for r in refs)
        )

    def _scorer(self, cjk: bool) -> RougeScorer:
        tokenizer = CJKTokenizer(self.options.use_stemmer) if cjk else None
        return RougeScorer(
            list(self.outputs),
            use_stemmer=self.options.use_stemmer,
            split_summaries=self.options.split_summaries,
            tokenizer=tokenizer,
        )

    def sample_stats(self, predictions: Sequence[str], references: References) -> np.ndarray:
        check_aligned(predictions, references)
        cjk = self._use_cjk(predictions, references)
        scorer = self._scorer(cjk)
        rows = []
        for prediction, refs in zip(predictions, references, strict=True):
            best = scorer.score_multi(list(refs), prediction)
            row = [getattr(best[t], f) for t in self.outputs for f in _FIELDS]
            rows.append([*row, len(refs), float(cjk)])
        stats = np.array(rows, dtype=np.float64).reshape(len(rows), 3 * len(self.outputs) + 2)
        if len(stats):
            self._remember(stats)
        return stats

    def _remember(self, stats: np.ndarray) -> None:
        # Rows tokenized by "default" under auto had no CJK text, where both tokenizers agree.
        tokenizer = "cjk" if stats[:, -1].any() else "default"
        self._last = (tokenizer, nrefs_label(stats[:, -2]))

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        if len(stats) == 0:
            raise ValueError("rouge: no samples to aggregate")
        self._remember(stats)
        signature = self.signature()
        scores = {}
        for i, rouge_type in enumerate(self.outputs):
            # Contiguous copies, so numpy sums exactly as np.mean over a list of the same values.
            precision, recall, fmeasure = (float(np.mean(stats[:, 3 * i + j].copy())) for j in range(3))
            scores[rouge_type] = Score(
                name=rouge_type,
                score=fmeasure,
                signature=signature,
                details={"precision": precision, "recall": recall},
            )
        return scores

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {t: stats[:, 3 * i + 2].tolist() for i, t in enumerate(self.outputs)}

    def signature(self) -> str:
        """Library version, tokenizer, stemming and references of the data scored last."""
        if self._last is None:
            raise ValueError("rouge: the tokenizer and reference count are unknown until data is scored")
        tokenizer, nrefs = self._last
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


def _require_punkt() -> None:
    """split_summaries uses nltk.sent_tokenize, whose model is a separate download."""
    try:
        nltk.sent_tokenize("One. Two.")
    except LookupError as exc:
        raise UserError(
            "rouge: split_summaries needs NLTK's sentence model; run "
            "`python -m nltk.downloader punkt_tab` or set the rouge option split_summaries to false"
        ) from exc
