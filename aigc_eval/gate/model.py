"""What a comparison is made of: verdicts, one entry per task × metric output, the whole comparison."""

from __future__ import annotations

from dataclasses import dataclass, field

from aigc_eval.config import RegressionRule

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"
CHANGED = "changed"  # significant and larger than min_delta, for a metric with no better direction
NOT_TESTED = "not tested"

# How unpaired rows (generated images) are tested; the report names it beside their tables.
UNPAIRED_TEST = "permutation test of the pooled generated images"


@dataclass(frozen=True)
class SampleChange:
    """One sample's score in both runs, with its texts truncated for a report."""

    id: str
    baseline: float
    current: float
    delta: float
    prompt: str
    reference: str
    baseline_prediction: str
    current_prediction: str


@dataclass(frozen=True)
class MetricComparison:
    """One task × metric output of one model pair: the scores, the test and the verdict.

    ``delta`` is current minus baseline; ``threshold`` is ``min_delta`` in score units (relative
    rules multiplied by |baseline|). ``p_value``/``p_corrected`` are None when not tested.
    """

    baseline_model: str
    current_model: str
    task: str
    metric: str  # the output name (bleu, rouge1, ref_perplexity, fd_efficientnet-lite0, ...)
    metric_name: str  # the metric that produced it (bleu, rouge, perplexity, fid, ...)
    n: int
    higher_is_better: bool | None
    baseline: float
    current: float
    delta: float
    ci_low: float | None
    ci_high: float | None
    ci_confidence: float | None
    p_value: float | None
    p_corrected: float | None
    alpha: float
    threshold: float
    verdict: str
    baseline_signature: str
    current_signature: str
    note: str = ""
    top_changes: tuple[SampleChange, ...] = ()
    method: str = ""  # how this entry was tested when not by the comparison's paired test


@dataclass(frozen=True)
class Comparison:
    """Every metric comparison of two runs, with the settings that decided the verdicts."""

    baseline: str
    current: str
    test: str  # paired-ar or paired-bs
    n_trials: int
    seed: int
    correction: str
    alpha: float
    pairs: tuple[tuple[str, str], ...]
    entries: tuple[MetricComparison, ...]
    notes: tuple[str, ...] = ()
    rules: tuple[RegressionRule, ...] = field(default_factory=tuple)

    @property
    def regressions(self) -> list[MetricComparison]:
        return [e for e in self.entries if e.verdict == REGRESSION]

    @property
    def has_regression(self) -> bool:
        return any(e.verdict == REGRESSION for e in self.entries)
