"""The tables of report.html: results (with significance marks), settings and method.

Each function turns the typed run record into plain values for its template
(``templates/run/<section>.html.j2``); no markup is made here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigc_eval.errors import UserError
from aigc_eval.metrics.registry import metric_class
from aigc_eval.record import ResultEntry, RunRecord
from aigc_eval.report.formatting import (
    ARROWS,
    DIRECTIONS,
    ci_text,
    format_score,
    interval_label,
    interval_notes,
    is_best,
)

MARKS = {
    "regression": ("▼", "significantly worse than the baseline"),
    "improvement": ("▲", "significantly better than the baseline"),
    "changed": ("●", "significantly different from the baseline"),
}
NO_DESCRIPTION = "no description"


# --- what the record holds, in the orders the page shows ---------------------------------------


def task_outputs(record: RunRecord, task: str) -> list[tuple[str, bool | None]]:
    """The metric outputs of one task with their direction, in the order they were computed."""
    outputs: dict[str, bool | None] = {}
    for entry in record.results:
        if entry.task == task:
            for name, score in entry.metrics.items():
                outputs.setdefault(name, score.higher_is_better)
    return list(outputs.items())


def text_tasks(record: RunRecord) -> list[str]:
    """Tasks scored from generated text (with samples); image tasks have none."""
    return [name for name, info in record.tasks.items() if info.kind != "image"]


def image_tasks(record: RunRecord) -> list[str]:
    return [name for name, info in record.tasks.items() if info.kind == "image"]


def is_image_row(record: RunRecord, row: str) -> bool:
    """Rows of ``backend: images`` score given images: they have no decoding settings or samples."""
    provenance = record.models.get(row)
    if provenance is not None:
        return provenance.backend == "images"
    return any(m.get("name") == row and m.get("backend") == "images" for m in record.suite.get("models", []))


def skipped_text(entry: ResultEntry) -> str:
    """'2 unreadable generated image(s) skipped: a.png, b.png' (skip_corrupt), or '' when none were."""
    parts = []
    for role, skipped in entry.skipped_images.items():
        if skipped.count:
            names = ", ".join(Path(f).name for f in skipped.files)
            parts.append(f"{skipped.count} unreadable {role} image(s) skipped: {names}")
    return "; ".join(parts)


def devices(record: RunRecord) -> str:
    """Where the text rows ran and where image features were computed."""
    text = sorted(
        {str(p.device) for row, p in record.models.items() if p.device and not is_image_row(record, row)}
    )
    image = sorted({str(e.device) for e in record.results if e.generated_images and e.device})
    parts = [", ".join(text)] if text else []
    if image:
        parts.append(f"image features: {', '.join(image)}")
    return " · ".join(parts) or "unknown"


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    task: str
    name: str
    arrow: str
    direction: str
    first: bool  # the first column of its task (a border on its left)


@dataclass(frozen=True)
class Mark:
    verdict: str
    symbol: str
    title: str


@dataclass(frozen=True)
class Cell:
    column: Column
    shown: bool  # False: the row has no such score (a dash)
    score: float | None = None
    best: bool = False
    title: str = ""
    ci: str = ""
    mark: Mark | None = None


@dataclass(frozen=True)
class ResultRow:
    name: str
    color: str
    baseline: bool
    cells: list[Cell]


def marks_by_cell(comparison: Any | None, run_dir: Path) -> dict[tuple[str, str, str], Any]:
    """Comparison entries by (row, task, output), when the comparison's current run is this one."""
    if comparison is None:
        return {}
    if Path(os.fspath(comparison.current)).resolve() != run_dir.resolve():
        raise UserError(f"the comparison's current run is {comparison.current}, not {run_dir}")
    return {(e.current_model, e.task, e.metric): e for e in comparison.entries}


def _mark(entry: Any) -> Mark | None:
    if entry is None or entry.verdict not in MARKS:
        return None
    symbol, meaning = MARKS[entry.verdict]
    p = "n/a" if entry.p_corrected is None else f"{entry.p_corrected:.4g}"
    title = f"{meaning} ({entry.baseline_model}): Δ {format_score(entry.delta)}, corrected p = {p}"
    return Mark(entry.verdict, symbol, title)


def results_table(
    record: RunRecord, rows: list[str], colors: dict[str, str], comparison: Any | None, run_dir: Path
) -> dict[str, Any]:
    """The results table: task groups, output columns, one line per row, and its legend."""
    marks = marks_by_cell(comparison, run_dir)
    scores = {(e.model, e.task, m): s for e in record.results for m, s in e.metrics.items()}
    columns: list[Column] = []
    for task in record.tasks:
        for j, (name, hib) in enumerate(task_outputs(record, task)):
            columns.append(Column(task, name, ARROWS[hib], DIRECTIONS[hib], j == 0))
    groups = [
        (task, _task_facts(record, task), width)
        for task in record.tasks
        if (width := sum(c.task == task for c in columns))
    ]
    baselines = {base for base, _ in comparison.pairs} if comparison is not None else set()
    same_run = comparison is not None and (
        Path(os.fspath(comparison.baseline)).resolve() == Path(os.fspath(comparison.current)).resolve()
    )
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = scores.get((row, column.task, column.name))
            if value is None:
                cells.append(Cell(column, shown=False))
                continue
            hib = value.higher_is_better
            column_scores = (scores[k].score for r in rows if (k := (r, column.task, column.name)) in scores)
            title = f"{row} · {column.task} · {column.name} = {value.score!r}"
            if value.ci is not None and value.ci.low is not None:
                title += f"; {interval_label(value.ci)}: [{value.ci.low!r}, {value.ci.high!r}]"
            elif value.ci_unavailable:
                title += f"; no interval: {value.ci_unavailable}"
            cells.append(
                Cell(
                    column,
                    shown=True,
                    score=value.score,
                    best=is_best(value.score, column_scores, hib),
                    title=title,
                    ci=ci_text(value.score, value.ci),
                    mark=_mark(marks.get((row, column.task, column.name))),
                )
            )
        body.append(ResultRow(row, colors[row], same_run and row in baselines, cells))
    return {"groups": groups, "columns": columns, "rows": body, "legend": _legend(record, comparison)}


def _task_facts(record: RunRecord, task: str) -> str:
    info = record.tasks[task]
    return f"n={info.n}" + (f" · {info.lang}" if info.lang else "")


def _legend(record: RunRecord, comparison: Any | None) -> str:
    intervals = record.suite.get("intervals", {})
    if intervals.get("n_resamples", 0):
        ci = (
            f"[low, high]: {intervals.get('confidence', 0.95):.0%} percentile-bootstrap interval over "
            f"samples ({intervals['n_resamples']:,} resamples, seed {intervals.get('seed')})"
        )
    else:
        ci = "no confidence intervals (intervals.n_resamples is 0)"
    text = f"↑ higher is better, ↓ lower is better; green: best in its column; {ci}. Click a header to sort."
    others = [note for task in image_tasks(record) for note in interval_notes(record, task)]
    if others:
        text += " Image metrics (their spreads are not confidence intervals): " + "; ".join(others) + "."
    if comparison is not None:
        pairs = ", ".join(f"{c} vs {b}" for b, c in comparison.pairs)
        text += (
            f" ▲/▼: significantly better/worse than the baseline ({pairs}; {comparison.test}, "
            f"{comparison.correction} correction, α={comparison.alpha:g}); no mark: no significant change."
        )
    return text


# --- settings ----------------------------------------------------------------------------------


def setting_text(value: Any) -> str:
    if value is None:
        return "–"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict, bool)) else str(value)


def settings(record: RunRecord, rows: list[str], colors: dict[str, str]) -> dict[str, Any]:
    """Per-row settings: the columns that differ between rows, then what all rows share. Image rows
    generate nothing here, so they get their own table (their image sets), not decoding settings."""
    suite_rows = {m["name"]: m for m in record.suite.get("models", [])}
    image_rows = [r for r in rows if is_image_row(record, r)]
    text_rows = [r for r in rows if r not in image_rows]
    flat: dict[str, dict[str, Any]] = {}
    for row in text_rows:
        config = suite_rows.get(row, {})
        provenance = record.models.get(row)
        values = {k: v for k, v in config.items() if k not in ("name", "generation", "images")}
        device = provenance.device if provenance is not None else None
        values["device"] = device if device is not None else config.get("device")
        values.update({f"generation.{k}": v for k, v in config.get("generation", {}).items()})
        flat[row] = values
    keys = list(dict.fromkeys(k for values in flat.values() for k in values))
    varying = [k for k in keys if len({json.dumps(flat[r].get(k), sort_keys=True) for r in text_rows}) > 1]
    shared = [k for k in keys if k not in varying]
    common = ", ".join(
        f"{k.removeprefix('generation.')}={setting_text(flat[text_rows[0]].get(k))}" for k in shared
    )
    return {
        "heads": [k.removeprefix("generation.") for k in varying],
        "text_rows": [
            {
                "name": row,
                "color": colors[row],
                "values": [setting_text(flat[row].get(k)) for k in varying],
                "weights": (record.models[row].weights_sha256 or "") if row in record.models else "",
            }
            for row in text_rows
        ],
        "common": common if text_rows else "",
        "image_rows": [
            {"name": row, "color": colors[row], "entry": e, "skipped": skipped_text(e)}
            for row in image_rows
            for e in record.results
            if e.model == row
        ],
        "tasks": record.tasks,
    }


# --- method ------------------------------------------------------------------------------------


def describe_metric(name: str) -> str:
    """The metric class's own description; one the registry does not know still gets a line."""
    try:
        cls = metric_class(name)
    except UserError:
        return NO_DESCRIPTION
    return getattr(cls, "description", None) or NO_DESCRIPTION


def used_metrics(record: RunRecord) -> list[str]:
    """The suite's metrics, then the image metrics of its image tasks, each once."""
    names = [m["name"] for m in record.suite.get("metrics", [])]
    image = set(image_tasks(record))
    for task in record.suite.get("tasks", []):
        if task.get("name") in image:
            names += task.get("image_metrics", [])
    return list(dict.fromkeys(names))


def method(record: RunRecord) -> dict[str, Any]:
    """How the numbers are made: aggregation, intervals, each metric, and every signature."""
    intervals = record.suite.get("intervals", {})
    general = (
        "Every corpus score is aggregated from per-sample sufficient statistics (saved in stats.jsonl), "
        "never averaged from per-sample scores unless the metric is a mean. "
    )
    if intervals.get("n_resamples", 0):
        general += (
            f"Intervals resample those statistic rows with replacement {intervals['n_resamples']:,} times "
            f"(seed {intervals.get('seed')}) and re-aggregate each resample; the interval is the central "
            f"{intervals.get('confidence', 0.95):.0%} of the resampled scores (percentile bootstrap), as "
            "sacrebleu's --confidence does. Samples are resampled, not models: the interval says how much "
            "the score depends on which samples were drawn."
        )
    signatures: dict[tuple[str, str], list[str]] = {}
    for entry in record.results:
        for name, score in entry.metrics.items():
            where = signatures.setdefault((name, score.signature), [])
            if entry.task not in where:
                where.append(entry.task)
    return {
        "general": general,
        "metrics": [(name, describe_metric(name)) for name in used_metrics(record)],
        "signatures": [(name, sig, ", ".join(tasks)) for (name, sig), tasks in signatures.items()],
    }
