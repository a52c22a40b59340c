"""The metric contract: per-sample sufficient statistics plus an aggregate.

Every metric is two pure functions (as in sacrebleu's ``metrics/base.py``):

* ``sample_stats(predictions, references)`` -> one row of statistics per sample;
* ``aggregate(stats)`` -> the corpus-level values computed from those rows only.

Because corpus values are computed from rows alone, bootstrap intervals, paired
tests, resume and caching can resample or move rows without knowing the metric.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# One inner list per sample: that sample's references (one or more).
References = Sequence[Sequence[str]]


@dataclass(frozen=True)
class Score:
    """One headline value of a metric, with the details that explain it."""

    name: str
    score: float
    signature: str
    higher_is_better: bool | None = True  # None: a descriptor with no better direction
    details: dict[str, float] = field(default_factory=dict)
    # Bootstrap confidence interval (low, high, mean, half_width, confidence, n_resamples, seed, method).
    interval: dict[str, float | int | str] | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON form: strict JSON, so an undefined value (NaN, e.g. perplexity over no tokens,
        or an infinity) becomes null, and an undefined score says why in ``score_unavailable``."""
        out: dict[str, object] = {
            "score": _finite(self.score),
            "signature": self.signature,
            "higher_is_better": self.higher_is_better,
            **{key: _finite(value) for key, value in self.details.items()},
        }
        if out["score"] is None:
            out[SCORE_UNAVAILABLE] = (
                f"the metric's value is {self.score!r} on this input (not a finite number)"
            )
        if self.interval is not None:
            out["ci"] = {key: _finite(value) for key, value in self.interval.items()}
        return out


# The key that explains a null score in ``Score.to_dict`` (results.json, ``score --json``).
SCORE_UNAVAILABLE = "score_unavailable"


def _finite(value: object) -> object:
    """None for a float NaN or infinity (numpy floats included), anything else unchanged."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


class Metric(ABC):
    """A text metric: pure over predictions and references, no model or file access.

    Subclasses set ``name`` (the key used in suites and ``--metric``) and
    ``outputs`` (the headline score names they produce, e.g. ``("rouge1", ...)``).
    """

    name: str
    outputs: tuple[str, ...]
    # The aggregate depends only on the column sums of the rows (BLEU, chrF, TER,
    # perplexity): resampling can then sum rows with one matrix product.
    additive: bool = False
    # False where re-aggregating a thousand resamples is unreasonably slow (evaluate modules).
    resamplable: bool = True

    @abstractmethod
    def sample_stats(self, predictions: Sequence[str], references: References) -> np.ndarray:
        """Rows of sufficient statistics, shape ``[n_samples, k]``."""

    @abstractmethod
    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        """Corpus-level scores keyed by output name, from statistic rows only."""

    @abstractmethod
    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        """Per-sample scores (for ``samples.jsonl``) keyed by output name."""

    @abstractmethod
    def signature(self) -> str:
        """How the score was made: library, version, tokenizer, options."""

    def compute(self, predictions: Sequence[str], references: References) -> dict[str, Score]:
        """Convenience: stats then aggregate."""
        return self.aggregate(self.sample_stats(predictions, references))


def check_aligned(predictions: Sequence[str], references: References) -> None:
    """Raise ValueError unless every prediction has at least one reference."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference sets; they must be aligned"
        )
    for i, refs in enumerate(references):
        if len(refs) == 0:
            raise ValueError(f"sample {i} has no reference")
