"""How numbers and intervals read in every output (markdown, CSV, HTML, leaderboard), defined once.

Scores keep their library's scale (sacrebleu 0–100, ROUGE 0–1); the precision follows the magnitude.
An interval is always named by its kind, so a spread that is not a confidence interval never reads
as one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from aigc_eval.record import Interval, RunRecord

# The direction of a metric after its name: higher better, lower better, or no direction.
ARROWS: dict[bool | None, str] = {True: " ↑", False: " ↓", None: ""}
DIRECTIONS: dict[bool | None, str] = {
    True: "higher is better",
    False: "lower is better",
    None: "no better direction",
}


def score_decimals(value: float) -> int:
    """Precision by magnitude, so 0–1 and 0–100 scales both read well."""
    return 0 if abs(value) >= 1000 else 2 if abs(value) >= 10 else 4


def format_score(value: float | None, decimals: int | None = None) -> str:
    """'72.61', '0.7500', '1,307'; 'n/a' for a score that is undefined (null in results.json)."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{score_decimals(value) if decimals is None else decimals}f}"


def interval_label(ci: Interval) -> str:
    """What the interval is, in words: never "CI" for a spread that is not a confidence interval."""
    if ci.kind == "subset-std":
        subsets = "?" if ci.n_subsets is None else ci.n_subsets
        return f"± std over {subsets} subsets of {'?' if ci.subset_size is None else ci.subset_size}"
    if ci.kind == "draws-range":
        draws = ci.n_draws if ci.n_draws is not None else ci.n_resamples
        return f"range over {'?' if draws is None else draws} disjoint draws of {ci.draw_size or '?'}"
    return f"{ci.confidence or 0.95:.0%} bootstrap CI"


def has_bounds(ci: Interval | None) -> bool:
    """An interval with both ends finite (one that can be drawn and printed)."""
    return (
        ci is not None
        and ci.low is not None
        and ci.high is not None
        and math.isfinite(ci.low)
        and math.isfinite(ci.high)
    )


def ci_text(score: float | None, ci: Interval | None) -> str:
    """'[51.20, 96.40]' at the score's precision, or '' without an interval."""
    if ci is None or score is None or not math.isfinite(score) or ci.low is None or ci.high is None:
        return ""
    places = score_decimals(score)
    return f"[{format_score(ci.low, places)}, {format_score(ci.high, places)}]"


def format_with_interval(score: float | None, ci: Interval | None) -> str:
    """'31.20 ± 0.80': the score and the half-width of its interval at the score's precision, as
    sacrebleu prints; a range over draws is printed as '[low, high]', since it is not symmetric."""
    text = format_score(score)
    if ci is None or score is None or math.isnan(score):
        return text
    places = score_decimals(score)
    if ci.kind == "draws-range" and ci.low is not None and ci.high is not None:
        return f"{text} [{format_score(ci.low, places)}, {format_score(ci.high, places)}]"
    if ci.half_width is not None and not math.isnan(ci.half_width):
        text += f" ± {format_score(ci.half_width, places)}"
    return text


def interval_notes(record: RunRecord, task: str) -> list[str]:
    """One line per output of ``task`` whose spread is not a bootstrap CI, or that has no interval
    for a stated reason (e.g. every KID subset is the whole set)."""
    notes: dict[str, None] = {}  # ordered and without repeats
    for entry in record.results:
        if entry.task != task:
            continue
        for name, score in entry.metrics.items():
            if score.ci is not None and score.ci.kind != "bootstrap-percentile":
                notes.setdefault(f"{name}: {interval_label(score.ci)}")
            elif score.ci is None and score.ci_unavailable:
                notes.setdefault(f"{name}: no interval ({score.ci_unavailable})")
    return list(notes)


def short_time(iso: str | None) -> str:
    """'2026-11-29T19:18:44+00:00' -> '2026-11-29 19:18 UTC'."""
    if not iso:
        return "unknown"
    text = iso.replace("T", " ")
    return f"{text[:16]} UTC" if text.endswith("+00:00") else text


def is_best(value: float | None, values: Iterable[float | None], higher_is_better: bool | None) -> bool:
    """Whether ``value`` is the best of ``values`` in the metric's direction (ties all count)."""
    finite_values = [v for v in values if v is not None and math.isfinite(v)]
    if higher_is_better is None or value is None or not math.isfinite(value) or len(finite_values) < 2:
        return False
    return value == (max(finite_values) if higher_is_better else min(finite_values))


def sort_key(score: float | None) -> str:
    """The exact score for sorting and tests; empty (sorted last) when it is not a number."""
    return repr(score) if score is not None and math.isfinite(score) else ""
