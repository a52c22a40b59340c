"""Comparison tables of a run record: one row per model setting, one column per task × metric.

``comparison_frame`` (numbers, for pandas), ``task_tables`` (text as people read it), and the
``table.md`` / ``table.csv`` output writers built from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from aigc_eval.outputs import writers
from aigc_eval.record import RunRecord, ScoreRecord
from aigc_eval.report.formatting import (
    ARROWS,
    format_score,
    format_with_interval,
    interval_label,
    interval_notes,
    score_decimals,
)
from aigc_eval.run_folder import RunFolder

__all__ = [
    "comparison_frame",
    "format_score",
    "format_with_interval",
    "interval_label",
    "score_decimals",
    "task_tables",
    "to_csv",
    "to_markdown",
]


def row_order(record: RunRecord) -> list[str]:
    """Model rows with results in suite order, then any with results but no suite entry."""
    have = {entry.model for entry in record.results}
    order = [m["name"] for m in record.suite.get("models", []) if m["name"] in have]
    return order + sorted(have - set(order))


def comparison_frame(record: RunRecord, intervals: bool = False) -> pd.DataFrame:
    """Scores as numbers: index = model rows (suite order), columns = 'task/metric'
    (plus 'task/metric ci_low' and 'ci_high' when ``intervals``)."""
    rows: dict[str, dict[str, float | None]] = {}
    for entry in record.results:
        row = rows.setdefault(entry.model, {})
        for metric, score in entry.metrics.items():
            column = f"{entry.task}/{metric}"
            row[column] = score.score
            if intervals and score.ci is not None:
                row[f"{column} ci_low"] = score.ci.low
                row[f"{column} ci_high"] = score.ci.high
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(row_order(record))
    frame.index.name = "model"
    return frame


def _cell(score: ScoreRecord | None) -> str:
    return "" if score is None else format_with_interval(score.score, score.ci)


def task_tables(record: RunRecord) -> dict[str, pd.DataFrame]:
    """Per task, the table as people read it: scores ± CI, direction arrows in headers."""
    values = {(e.model, f"{e.task}/{m}"): s for e in record.results for m, s in e.metrics.items()}
    columns_of: dict[str, list[str]] = {}
    for _, column in values:
        task_columns = columns_of.setdefault(column.split("/", 1)[0], [])
        if column not in task_columns:
            task_columns.append(column)
    directions = {column: score.higher_is_better for (_, column), score in values.items()}
    marks = {}
    if record.significance is not None:
        marks = {
            (m.model, f"{m.task}/{m.metric}"): " ▲" if m.verdict == "improvement" else " ▼"
            for m in record.significance.marks
        }
    tables: dict[str, pd.DataFrame] = {}
    for task in record.tasks:
        columns = columns_of.get(task, [])
        models = [m for m in row_order(record) if any((m, c) in values for c in columns)]
        shown = pd.DataFrame(
            {c: [_cell(values.get((m, c))) + marks.get((m, c), "") for m in models] for c in columns},
            index=pd.Index(models, name="model"),
        )
        shown.columns = [f"{c.split('/', 1)[1]}{ARROWS[directions.get(c)]}" for c in columns]
        tables[task] = shown
    return tables


def to_markdown(record: RunRecord) -> str:
    """table.md: one table per task, with the significance legend and the interval notes."""
    sections = [f"# {record.suite_name} — run {record.run_id}\n"]
    significance = record.significance
    if significance is not None:
        sections.append(
            f"▲ / ▼: significantly better / worse than `{significance.baseline}` "
            f"({significance.test}, {significance.correction}-corrected).\n"
        )
    for task, table in task_tables(record).items():
        info = record.tasks[task]
        if info.kind == "image":
            sections.append(f"## {task} (n={info.n} reference images, backbone={info.backbone})\n")
        else:
            sections.append(f"## {task} (n={info.n}, lang={info.lang or 'unspecified'})\n")
        align = ("left",) + ("right",) * len(table.columns)
        sections.append(table.to_markdown(colalign=align, disable_numparse=True) + "\n")
        notes = interval_notes(record, task)
        if notes:
            sections.append("Intervals: " + "; ".join(notes) + ".\n")
    return "\n".join(sections)


def to_csv(record: RunRecord) -> str:
    """table.csv: every score and interval bound as a number, one line per model row."""
    return comparison_frame(record, intervals=True).to_csv(float_format="%.10g")


@writers.register("table.md")
class MarkdownTableWriter:
    name: ClassVar[str] = "table.md"

    def write(self, folder: RunFolder, record: RunRecord, comparison: Any | None) -> Path:
        return folder.write_output(self.name, to_markdown(record))


@writers.register("table.csv")
class CsvTableWriter:
    name: ClassVar[str] = "table.csv"

    def write(self, folder: RunFolder, record: RunRecord, comparison: Any | None) -> Path:
        return folder.write_output(self.name, to_csv(record))
