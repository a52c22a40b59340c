"""The regression gate: tests between two run folders, text and image metrics alike.

Everything is read back from the run folders through ``RunFolder``: each metric entry is rebuilt as a
``StoredMetric`` (text ones from ``stats.jsonl``, image ones from the generated images' saved features)
and re-aggregates its rows, so the tests swap or resample rows exactly as ``aigc_eval.stats`` does for
sacrebleu. A metric regresses only when it got worse by more than the rule's ``min_delta`` AND its
corrected p-value is below alpha: the p-value alone is not enough, because (as in sacrebleu) a system
equal to its baseline gets the smallest p, ``1/(n+1)``. A row is compared only on the tasks it ran in
both runs. Modules: ``model`` (the result types), ``rules`` (rules, overrides, correction, verdicts),
``runs`` (both sides read through RunFolder, pairing checks), ``metric_tests`` (the tests of one metric
entry, paired or unpaired), ``core`` (``compare_runs``).
"""

from aigc_eval.gate.core import compare_runs
from aigc_eval.gate.metric_tests import DEFAULT_TRIALS
from aigc_eval.gate.model import (
    CHANGED,
    IMPROVEMENT,
    NO_CHANGE,
    NOT_TESTED,
    REGRESSION,
    UNPAIRED_TEST,
    Comparison,
    MetricComparison,
    SampleChange,
)
from aigc_eval.gate.rules import parse_pair, suite_regression, with_overrides
from aigc_eval.gate.runs import TOP_SAMPLES, truncate

__all__ = [
    "CHANGED",
    "DEFAULT_TRIALS",
    "IMPROVEMENT",
    "NOT_TESTED",
    "NO_CHANGE",
    "REGRESSION",
    "TOP_SAMPLES",
    "UNPAIRED_TEST",
    "Comparison",
    "MetricComparison",
    "SampleChange",
    "compare_runs",
    "parse_pair",
    "suite_regression",
    "truncate",
    "with_overrides",
]
