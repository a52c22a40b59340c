"""The gate's rules: the suite's ``regression`` section, command-line overrides, which rule applies to
an output, the multiple-comparison correction and the verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from pydantic import ValidationError

from aigc_eval.config import Regression, RegressionRule
from aigc_eval.errors import UserError
from aigc_eval.gate.model import CHANGED, IMPROVEMENT, NO_CHANGE, NOT_TESTED, REGRESSION, MetricComparison
from aigc_eval.record import RunRecord
from aigc_eval.run_folder import RunFolder
from aigc_eval.stats import benjamini_hochberg, holm


def suite_regression(run: RunRecord | RunFolder | str | Path) -> Regression:
    """The ``regression:`` section a run was made with (defaults for a run that has none)."""
    if not isinstance(run, RunRecord):
        run = (run if isinstance(run, RunFolder) else RunFolder.open(run)).read_record()
    try:
        return Regression.model_validate(run.suite.get("regression", {}))
    except ValidationError as error:
        raise UserError(f"the run's regression section is invalid: {error}") from None


def with_overrides(
    regression: Regression,
    *,
    alpha: float | None = None,
    test: str | None = None,
    n_trials: int | None = None,
    seed: int | None = None,
    correction: str | None = None,
    min_deltas: Sequence[str] = (),
) -> Regression:
    """Apply command-line flags over a suite's section; each ``METRIC=VALUE[%]`` appends a rule.

    The appended rule wins for that metric on every task (later rules win) and keeps the direction
    and alpha of the last task-wide rule that matched it, so only the minimum effect changes.
    """
    section = regression.model_dump()
    for key, value in (
        ("alpha", alpha),
        ("test", test),
        ("n_trials", n_trials),
        ("seed", seed),
        ("correction", correction),
    ):
        if value is not None:
            section[key] = value
    rules = list(regression.rules)
    for text in min_deltas:
        metric, value, relative = _parse_min_delta(text)
        inherited = [r for r in rules if r.task == "*" and fnmatchcase(metric, r.metric)]
        base = inherited[-1].model_dump() if inherited else {}
        rules.append(RegressionRule(**{**base, "metric": metric, "min_delta": value, "relative": relative}))
    section["rules"] = [r.model_dump() for r in rules]
    try:
        return Regression.model_validate(section)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise UserError(f"invalid regression option: {problems}") from None


def parse_pair(text: str) -> tuple[str, str]:
    """``BASE_ROW=CUR_ROW`` from ``--pair``."""
    base, sep, cur = text.partition("=")
    if not sep or not base or not cur:
        raise UserError(f"--pair {text!r}: write BASELINE_ROW=CURRENT_ROW, e.g. --pair greedy=greedy-v2")
    return base, cur


def _parse_min_delta(text: str) -> tuple[str, float, bool]:
    metric, sep, value = text.partition("=")
    relative = value.endswith("%")
    try:
        number = float(value.removesuffix("%"))
    except ValueError:
        number = math.nan
    if not sep or not metric or not number >= 0:
        raise UserError(
            f"--min-delta {text!r}: write METRIC=VALUE (absolute) or METRIC=VALUE% (relative), "
            "e.g. --min-delta bleu=0.5 or --min-delta ref_perplexity=2%"
        )
    return metric, number / 100 if relative else number, relative


def rule_for(rules: Sequence[RegressionRule], task: str, output: str, metric: str) -> RegressionRule | None:
    """The last rule whose globs match the task and the output (or its metric's) name."""
    matching = [
        r
        for r in rules
        if fnmatchcase(task, r.task) and (fnmatchcase(output, r.metric) or fnmatchcase(metric, r.metric))
    ]
    return matching[-1] if matching else None


def correct(p_values: list[float], correction: str) -> list[float]:
    """Holm, Benjamini–Hochberg or no correction over every tested p-value of a comparison."""
    if not p_values or correction == "none":
        return list(p_values)
    return holm(p_values) if correction == "holm" else benjamini_hochberg(p_values)


def verdict(entry: MetricComparison, p_corrected: float | None) -> str:
    """Significant AND larger than min_delta, in the output's direction; p alone never decides."""
    if p_corrected is None:
        return NOT_TESTED
    if not (p_corrected < entry.alpha and abs(entry.delta) > entry.threshold):
        return NO_CHANGE
    if entry.higher_is_better is None:
        return CHANGED
    return IMPROVEMENT if (entry.delta > 0) == entry.higher_is_better else REGRESSION
