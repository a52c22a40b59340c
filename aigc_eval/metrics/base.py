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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel

from aigc_eval.record import Interval, ScoreRecord

if TYPE_CHECKING:
    from aigc_eval.backends.base import TokenLogLikelihood
    from aigc_eval.record import Provenance

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

    def to_record(self) -> ScoreRecord:
        """The typed form kept in results.json: an undefined value is null with the reason beside it."""
        details = {key: _finite(value) for key, value in self.details.items()}
        ci_unavailable = details.pop("ci_unavailable", None)
        score = _finite(self.score)
        return ScoreRecord(
            score=score,  # type: ignore[arg-type]
            signature=self.signature,
            higher_is_better=self.higher_is_better,
            details=details,  # type: ignore[arg-type]
            ci=None if self.interval is None else Interval.model_validate(_finite_values(self.interval)),
            ci_unavailable=None if ci_unavailable is None else str(ci_unavailable),
            score_unavailable=(
                None
                if score is not None
                else f"the metric's value is {self.score!r} on this input (not a finite number)"
            ),
        )


def _finite_values(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _finite(value) for key, value in values.items()}


# The key that explains a null score in ``Score.to_dict`` (results.json, ``score --json``).
SCORE_UNAVAILABLE = "score_unavailable"


def _finite(value: object) -> object:
    """None for a float NaN or infinity (numpy floats included), anything else unchanged."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


class Scorer(Protocol):
    """Model-backed statistics the runner provides to a metric (``needs_scorer``): metric modules
    stay free of models and files, and rows sharing a scoring model score each text once."""

    def loglikelihood(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        stride: int | None = None,
        prepend_bos: bool = True,
        contexts: Sequence[str] | None = None,
        per_token: bool = False,
    ) -> list[TokenLogLikelihood]: ...


@dataclass(frozen=True)
class MetricContext:
    """Facts a metric is built with beyond its options (never a model or a file handle).

    ``scorer``: the provenance of the model a model-backed metric scores with (for its signature).
    ``reference``: an image metric's reference side (a ``metrics.image.FeatureSet``, arrays only);
    ``origin``: which features its rows are (backbone, weights, resize: the signature part).
    """

    scorer: Provenance | None = None
    reference: Any = None
    origin: str | None = None


@dataclass(frozen=True)
class SampleInputs:
    """What ``sample_stats`` may use beyond predictions and references."""

    prompts: Sequence[str] | None = None
    scorer: Scorer | None = None  # given when the metric says ``needs_scorer``


class Metric(ABC):
    """A metric: per-sample inputs -> statistic rows -> scores, pure (no model or file access).

    Subclasses are registered by name (``aigc_eval.metrics.registry.metrics.register``) and set
    ``name`` (the key used in suites and ``--metric``), ``outputs`` (the headline score names,
    e.g. ``("rouge1", ...)``), ``Options`` (a pydantic model of their suite options) and
    ``description`` (how the score is made, shown in reports).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    outputs: tuple[str, ...]
    # The aggregate depends only on the column sums of the rows (BLEU, chrF, TER,
    # perplexity): resampling can then sum rows with one matrix product.
    additive: ClassVar[bool] = False
    # False where re-aggregating a thousand resamples is unreasonably slow (evaluate modules).
    resamplable: ClassVar[bool] = True
    # True: row i of two runs is the same sample (text), so tests pair them; False: rows are
    # exchangeable draws (generated images), so two runs are compared by permutation.
    paired: ClassVar[bool] = True
    # False where a resample that repeats rows is not the metric of any set (k-NN recall and coverage
    # of images: the generated set's own k-NN radii shrink to 0): compare then runs only the
    # permutation test, with no bootstrap interval of the delta.
    bootstrappable: ClassVar[bool] = True
    # Rows need log-likelihoods from a scoring model (``SampleInputs.scorer``).
    needs_scorer: ClassVar[bool] = False

    @abstractmethod
    def sample_stats(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        """Rows of sufficient statistics, shape ``[n_samples, k]``."""

    @abstractmethod
    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        """Corpus-level scores keyed by output name, from statistic rows only."""

    @abstractmethod
    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        """Per-sample scores (for ``samples.jsonl``) keyed by output name."""

    @abstractmethod
    def signature(self, stats: np.ndarray) -> str:
        """How scores of these rows are made: library, version, tokenizer, options, reference count.

        A function of the options and the rows alone, so a score re-aggregated from saved rows
        (compare, a resumed run) carries the same signature as the original."""

    def __init__(
        self, options: BaseModel | None = None, lang: str | None = None, context: MetricContext | None = None
    ) -> None:
        self.options = options if options is not None else self.Options()
        self.lang = lang
        self.context = context or MetricContext()

    @classmethod
    def output_names(cls, options: BaseModel) -> tuple[str, ...] | None:
        """The score names an entry with these options produces, known before computing anything
        (None: known only after a compute, e.g. an evaluate module reporting every key)."""
        return tuple(cls(options).outputs)  # type: ignore[call-arg]

    def values(self, stats: np.ndarray) -> dict[str, float]:
        """Each output's value on these rows: ``aggregate`` without signatures, details or ``Score``
        objects, which is what resampling re-evaluates thousands of times. A subclass overrides it
        only to be faster; the values stay ``aggregate``'s bit for bit."""
        return {name: score.score for name, score in self.aggregate(stats).items()}

    def stacked_values(self, stack: np.ndarray) -> dict[str, np.ndarray]:
        """Each output's ``values`` on every row set of a stack ``[m, n, k]``, as ``m`` floats: what
        intervals and paired tests evaluate (resamples; for an ``additive`` metric, summed rows
        ``[m, 1, k]``). One ``values`` call per set here; a subclass overrides it only to vectorise,
        bit for bit the same values."""
        per_set = [self.values(rows) for rows in stack]
        names = per_set[0] if per_set else self.outputs
        return {name: np.array([v[name] for v in per_set], dtype=np.float64) for name in names}

    def custom_intervals(
        self, scores: dict[str, Score], stats: np.ndarray, seed: int
    ) -> dict[str, Score] | None:
        """Scores with intervals made the metric's own way (KID's subset std, FID's disjoint draws),
        or None for the default: a percentile bootstrap of the rows when ``resamplable``."""
        return None

    def pooled(self, pool: np.ndarray) -> Callable[[np.ndarray], dict[str, float]]:
        """Unpaired tests (``paired = False``) evaluate the metric on many index sets into one pool of
        rows (both runs' generated images): ``pooled(pool)(idx)`` is ``aggregate(pool[idx])`` values.
        A metric may override it to reuse work across index sets (pairwise distances)."""
        return lambda idx: {name: s.score for name, s in self.aggregate(pool[idx]).items()}

    def compute(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> dict[str, Score]:
        """Convenience: stats then aggregate."""
        return self.aggregate(self.sample_stats(predictions, references, inputs))


@dataclass(frozen=True)
class StoredMetric:
    """A metric entry of one row × task rebuilt from a run folder: what compare tests.

    ``ids`` are the sample ids of paired rows (text); None for unpaired rows (images). ``unavailable``
    maps an output to why it cannot be tested (e.g. a statistics-only .npz has no per-image rows).
    """

    metric: Metric
    rows: np.ndarray
    ids: list[str] | None = None
    unavailable: dict[str, str] = field(default_factory=dict)


def check_aligned(predictions: Sequence[str], references: References) -> None:
    """Raise ValueError unless every prediction has at least one reference."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference sets; they must be aligned"
        )
    for i, refs in enumerate(references):
        if len(refs) == 0:
            raise ValueError(f"sample {i} has no reference")
