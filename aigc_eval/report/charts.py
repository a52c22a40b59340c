"""Chart geometry for hand-made SVG (small, crisp, themable, no plotting dependency).

Each function computes positions and hover texts only; ``templates/charts.html.j2`` draws them.
Bars: a corpus score per row with its interval; boxes: per-sample scores per row; the speed
chart: generated tokens per second; sparklines: a leaderboard cell's history over runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from aigc_eval.record import Interval, RunRecord, SampleRecord
from aigc_eval.report.formatting import ARROWS, ci_text, format_score, has_bounds, interval_label
from aigc_eval.report.sections import image_tasks, task_outputs

LABEL_W, PLOT_W, VALUE_W, ROW_H, TOP, AXIS_H = 128, 190, 62, 22, 6, 22
WIDTH = LABEL_W + PLOT_W + VALUE_W
VALUE_X = LABEL_W + PLOT_W + 6  # where the value at the right of a row starts


@dataclass(frozen=True)
class Tick:
    x: str
    label: str
    kind: str  # "zero" or "grid"


@dataclass(frozen=True)
class ChartRow:
    """One row of a bar or box chart: its label at the left, its shapes, its value at the right."""

    name: str
    shown: str  # the label, shortened to fit
    y: str  # the baseline of its label and value texts
    color: str
    value: str = ""  # the number at the right ("n/a" when there is none)
    tip: str = ""
    shapes: dict[str, str] = field(default_factory=dict)  # coordinates and paths, formatted
    outliers: list[str] = field(default_factory=list)  # box plots: x of each point beyond the whiskers


@dataclass(frozen=True)
class Chart:
    width: ClassVar[int] = WIDTH
    top: ClassVar[int] = TOP
    label_x: ClassVar[int] = LABEL_W - 8  # row labels end here
    value_x: ClassVar[int] = VALUE_X

    kind: str  # "bar" or "box"
    height: str
    label: str
    ticks: list[Tick]
    axis_bottom: int
    rows: list[ChartRow]
    mid: list[str]  # the vertical middle of each row


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """1-2-2.5-5 steps covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_label(value: float) -> str:
    return f"{value / 1000:,.4g}k" if abs(value) >= 10000 else f"{value:,.4g}"


def _ticks(ticks: Sequence[float], x: Callable[[float], float]) -> list[Tick]:
    return [Tick(f"{x(t):.1f}", tick_label(t), "zero" if t == 0 else "grid") for t in ticks]


def _row(i: int, name: str, color: str, **values: object) -> ChartRow:
    mid = TOP + i * ROW_H + ROW_H / 2
    shown = name if len(name) <= 19 else name[:18] + "…"
    return ChartRow(name, shown, f"{mid + 4:.1f}", color, **values)  # type: ignore[arg-type]


def bar_chart(bars: Sequence[tuple[str, str, float | None, Interval | None]]) -> Chart | None:
    """Horizontal bars from zero with the interval as an error bar, one per (row, color, score, ci)."""
    numbers: list[float | None] = []
    for _, _, score, ci in bars:
        numbers += [score, *((ci.low, ci.high) if ci is not None else ())]
    finite = [v for v in numbers if v is not None and math.isfinite(v)]
    if not finite:
        return None
    ticks = nice_ticks(min(0.0, *finite), max(0.0, *finite))
    lo, hi = ticks[0], ticks[-1]

    def x(v: float) -> float:
        return LABEL_W + (v - lo) / (hi - lo) * PLOT_W

    rows = []
    for i, (name, color, score, ci) in enumerate(bars):
        mid = TOP + i * ROW_H + ROW_H / 2
        if score is None or not math.isfinite(score):
            rows.append(_row(i, name, color, value="n/a"))
            continue
        left, right = sorted((x(0.0), x(score)))
        tip = f"{name}: {format_score(score)} {ci_text(score, ci)}".strip()
        if ci is not None and ci.low is not None:
            tip += f" ({interval_label(ci)})"
        shapes = {
            "x": f"{left:.1f}",
            "y": f"{mid - 7:.1f}",
            "width": f"{max(right - left, 1):.1f}",
        }
        if has_bounds(ci):
            assert ci is not None and ci.low is not None and ci.high is not None
            a, b = x(ci.low), x(ci.high)
            shapes["err"] = (
                f"M{a:.1f} {mid:.1f}H{b:.1f}M{a:.1f} {mid - 4:.1f}V{mid + 4:.1f}"
                f"M{b:.1f} {mid - 4:.1f}V{mid + 4:.1f}"
            )
        rows.append(_row(i, name, color, value=format_score(score), tip=tip, shapes=shapes))
    return _chart("bar", len(bars), "corpus scores with confidence intervals", _ticks(ticks, x), rows)


def box_plot(rows_in: Sequence[tuple[str, str, list[float]]]) -> Chart:
    """Per-row box plots on one axis; logarithmic when positive values span 100× or more."""
    values = [v for _, _, vs in rows_in for v in vs]
    log = min(values) > 0 and max(values) / min(values) >= 100
    if log:
        ticks = [
            10.0**e
            for e in range(math.floor(math.log10(min(values))), math.ceil(math.log10(max(values))) + 1)
        ]
        if len(ticks) < 2:
            ticks.append(ticks[0] * 10)
        lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
    else:
        ticks = nice_ticks(min(values), max(values))
        lo, hi = ticks[0], ticks[-1]

    def x(v: float) -> float:
        t = math.log10(v) if log else v
        return LABEL_W + (t - lo) / (hi - lo) * PLOT_W

    rows = []
    for i, (name, color, vs) in enumerate(rows_in):
        if not vs:
            rows.append(_row(i, name, color))
            continue
        mid = TOP + i * ROW_H + ROW_H / 2
        array = np.asarray(vs, dtype=float)
        q1, median, q3 = (float(q) for q in np.percentile(array, [25, 50, 75]))
        reach = 1.5 * (q3 - q1)
        inside = array[(array >= q1 - reach) & (array <= q3 + reach)]
        low, high = float(inside.min()), float(inside.max())
        outliers = array[(array < low) | (array > high)]
        mean = float(array.mean())
        tip = (
            f"{name}: n={len(array)}, median {format_score(median)}, "
            f"IQR [{format_score(q1)}, {format_score(q3)}], mean {format_score(mean)}, "
            f"range [{format_score(float(array.min()))}, {format_score(float(array.max()))}]"
        )
        shapes = {
            "whisk": (
                f"M{x(low):.1f} {mid:.1f}H{x(q1):.1f}M{x(q3):.1f} {mid:.1f}H{x(high):.1f}"
                f"M{x(low):.1f} {mid - 4:.1f}V{mid + 4:.1f}M{x(high):.1f} {mid - 4:.1f}V{mid + 4:.1f}"
            ),
            "x": f"{x(q1):.1f}",
            "y": f"{mid - 7:.1f}",
            "width": f"{max(x(q3) - x(q1), 1):.1f}",
            "med": f"M{x(median):.1f} {mid - 7:.1f}V{mid + 7:.1f}",
            "mean": f"M{x(mean):.1f} {mid - 4:.1f}l4 4l-4 4l-4 -4z",
        }
        points = [f"{x(float(v)):.1f}" for v in outliers[:200]]
        rows.append(_row(i, name, color, value=format_score(median), tip=tip, shapes=shapes, outliers=points))
    label = "per-sample scores" + (" (log scale)" if log else "")
    return _chart("box", len(rows_in), label, _ticks(ticks, x), rows)


def _chart(kind: str, n: int, label: str, ticks: list[Tick], rows: list[ChartRow]) -> Chart:
    plot_h = TOP + n * ROW_H
    mid = [f"{TOP + i * ROW_H + ROW_H / 2:.1f}" for i in range(n)]
    return Chart(kind, f"{plot_h + AXIS_H:.0f}", label, ticks, plot_h, rows, mid)


@dataclass(frozen=True)
class Speed:
    chart: Chart | None
    totals: list[tuple[str, float, float]]  # row, generated tokens, seconds


def speed(record: RunRecord, rows: list[str], colors: dict[str, str]) -> Speed | None:
    """Generated tokens per second over all tasks of a row, warm-up batch left out (resumed samples
    were not timed); runs written before ``timed_tokens`` existed fall back to the whole generation."""
    totals: dict[str, list[float]] = {row: [0.0, 0.0] for row in rows}
    for entry in record.results:
        timing = entry.timing
        tokens, seconds = (
            (timing.timed_tokens, timing.timed_s)
            if timing.timed_s is not None
            else (timing.generated_tokens, timing.generation_s)
        )
        if tokens and seconds and entry.model in totals:
            totals[entry.model][0] += tokens
            totals[entry.model][1] += seconds
    if not any(seconds for _, seconds in totals.values()):
        return None
    bars = [
        (row, colors[row], tokens / seconds if seconds else None, None)
        for row, (tokens, seconds) in totals.items()
    ]
    return Speed(bar_chart(bars), [(row, tokens, seconds) for row, (tokens, seconds) in totals.items()])


@dataclass(frozen=True)
class Sparkline:
    width: int
    height: int
    points: str  # the polyline
    dots: list[tuple[str, str, str, bool]]  # x, y, hover text, drawn as odd (red)


def sparkline(values: Sequence[float], labels: Sequence[str], odd: Sequence[bool] = ()) -> Sparkline:
    """A small trend line; ``labels`` become the hover text, ``odd`` points are drawn in red."""
    width, height, pad = 96, 24, 3
    lo, hi = min(values), max(values)
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    xy = [
        (pad + i * step, height / 2 if hi == lo else height - pad - (v - lo) / (hi - lo) * (height - 2 * pad))
        for i, v in enumerate(values)
    ]
    return Sparkline(
        width,
        height,
        " ".join(f"{x:.1f},{y:.1f}" for x, y in xy),
        [(f"{x:.1f}", f"{y:.1f}", labels[i], i < len(odd) and odd[i]) for i, (x, y) in enumerate(xy)],
    )


@dataclass(frozen=True)
class Card:
    """One output of one task: its bars, and its per-sample boxes when there are per-sample scores."""

    name: str
    arrow: str
    bars: Chart | None
    boxes: Chart | None


def plots(
    record: RunRecord, samples: Sequence[SampleRecord], rows: list[str], colors: dict[str, str]
) -> dict[str, Any]:
    """Per task, a card per output; then the generation speed."""
    scores = {(e.model, e.task, m): s for e in record.results for m, s in e.metrics.items()}
    image = set(image_tasks(record))  # scored as sets: no per-sample scores to spread
    per_sample: dict[tuple[str, str, str], list[float]] = {}
    for s in samples:
        for name, value in s.scores.items():
            if value is not None and math.isfinite(value):
                per_sample.setdefault((s.model, s.task, name), []).append(value)
    tasks = []
    for task in record.tasks:
        scored = [row for row in rows if any(key[:2] == (row, task) for key in scores)]
        cards = []
        for name, hib in task_outputs(record, task):
            bars = [
                (row, colors[row], s.score if s else None, s.ci if s else None)
                for row in scored
                for s in [scores.get((row, task, name))]
            ]
            spread = [
                (row, colors[row], [] if task in image else per_sample.get((row, task, name), []))
                for row in scored
            ]
            boxes = box_plot(spread) if any(v for _, _, v in spread) else None
            cards.append(Card(name, ARROWS[hib], bar_chart(bars), boxes))
        tasks.append((task, cards))
    return {"tasks": tasks, "speed": speed(record, rows, colors)}
