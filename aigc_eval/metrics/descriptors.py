"""Cheap descriptors of the outputs themselves: length, emptiness, diversity.

They need no reference and no model, and flag degenerate generations (empty
strings, repetition loops) that reference-based scores can hide.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from aigc_eval import __version__
from aigc_eval.metrics.base import Metric, References, SampleInputs, Score
from aigc_eval.metrics.registry import metrics
from aigc_eval.metrics.tokenize import words

_SIGNATURE = f"aigc-eval:{__version__}|tok:unicode-words|distinct:corpus"


def _ngrams(tokens: list[str], n: int) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _distinct(ngram_lists: Sequence[tuple[tuple[str, ...], ...]]) -> tuple[float, int, int]:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams, pooled over the lists."""
    total = sum(len(grams) for grams in ngram_lists)
    unique = len({tuple(g) for grams in ngram_lists for g in grams})  # tuple(): rows read back from JSON
    return (unique / total if total else 0.0), unique, total


@metrics.register("descriptors")
class Descriptors(Metric):
    """Mean length in ``words()`` tokens, empty rate, corpus distinct-1 and distinct-2.

    Distinct-n is a ratio over the pooled corpus, not a sum of rows, so each row
    keeps its n-grams (object dtype); ``aggregate`` pools whatever rows it gets,
    which keeps it valid on resampled rows.
    """

    name = "descriptors"
    description = (
        "Descriptors of the outputs alone (no reference): mean length in words (CJK characters "
        "count as words), share of empty outputs, distinct-1/2 over the pooled corpus."
    )
    outputs = ("length", "empty_rate", "distinct1", "distinct2")

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def sample_stats(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        """Columns: token count, empty flag, unigrams, bigrams. References are not used."""
        stats = np.empty((len(predictions), 4), dtype=object)
        for i, text in enumerate(predictions):
            tokens = words(text)
            # Cell by cell: assigning a whole row would let numpy unpack the n-gram tuples.
            for j, value in enumerate(
                (len(tokens), not text.strip(), _ngrams(tokens, 1), _ngrams(tokens, 2))
            ):
                stats[i, j] = value
        return stats

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        if len(stats) == 0:
            raise ValueError("descriptors: no samples to aggregate")
        lengths = stats[:, 0].astype(np.float64)
        empty = stats[:, 1].astype(bool)
        scores = {
            "length": Score(
                "length",
                float(lengths.mean()),
                _SIGNATURE,
                higher_is_better=None,
                details={
                    "median": float(np.median(lengths)),
                    "min": float(lengths.min()),
                    "max": float(lengths.max()),
                    "std": float(lengths.std()),
                },
            ),
            "empty_rate": Score(
                "empty_rate",
                float(empty.mean()),
                _SIGNATURE,
                higher_is_better=False,
                details={"empty": int(empty.sum())},
            ),
        }
        for n in (1, 2):
            value, unique, total = _distinct(stats[:, 1 + n])
            scores[f"distinct{n}"] = Score(
                f"distinct{n}", value, _SIGNATURE, details={"unique": unique, "total": total}
            )
        return scores

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {
            "length": [float(x) for x in stats[:, 0]],
            "empty_rate": [float(x) for x in stats[:, 1]],
            "distinct1": [_distinct([grams])[0] for grams in stats[:, 2]],
            "distinct2": [_distinct([grams])[0] for grams in stats[:, 3]],
        }

    def signature(self, stats: np.ndarray) -> str:
        return _SIGNATURE
