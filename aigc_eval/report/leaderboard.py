"""The leaderboard page: the latest score of every model setting on every task, across all runs in a
folder, as html (the report's page shell and templates), markdown or csv.

Entry point (the CLI's ``aigc-eval leaderboard``): ``build_leaderboard(runs_dir, fmt, output) -> str``.
What a cell is, and which runs share one, is ``report.board``'s.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aigc_eval.errors import UserError
from aigc_eval.report.board import (
    Leaderboard,
    Point,
    TaskGroup,
    changed_method,
    collect,
    finite_points,
    history_text,
    link,
)
from aigc_eval.report.charts import Sparkline, sparkline
from aigc_eval.report.formatting import (
    ARROWS,
    ci_text,
    format_with_interval,
    interval_label,
    is_best,
    short_time,
)
from aigc_eval.report.shell import Fact, render_page

Format = Literal["html", "md", "csv"]
_BLOCKS = "▁▂▃▄▅▆▇█"

_MARKDOWN = str.maketrans(
    {c: f"\\{c}" for c in "|\\*`[]"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ", "\r": " "}
)


def build_leaderboard(runs_dir: Path, fmt: Format = "html", output: Path | None = None) -> str:
    """The leaderboard of every run under ``runs_dir`` as html, md or csv text.

    ``output`` is where the text will be written: links to the runs' reports are made relative to
    its folder (default: ``runs_dir``), so the file keeps working when the folder is moved or shared.
    """
    board = collect(Path(runs_dir))
    base = Path(output).resolve().parent if output is not None else Path(runs_dir).resolve()
    if fmt == "html":
        return to_html(board, base)
    if fmt == "md":
        return to_markdown(board, base)
    if fmt == "csv":
        return to_csv(board)
    raise UserError(f"--format {fmt}: unknown format; use html, md or csv")


# --- html ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardCell:
    point: Point | None  # None: this setting has no score for this metric (a dash)
    best: bool = False
    link: str = ""
    title: str = ""
    ci: str = ""
    changed: bool = False  # the signature changed within the history
    trend: Sparkline | None = None


def to_html(board: Leaderboard, base: Path) -> str:
    latest = board.runs[-1]
    facts = [
        Fact("runs folder", str(board.runs_dir), code=True),
        Fact("runs", str(len(board.runs))),
        Fact("latest run", f"{short_time(latest.finished)} · {latest.run_id}"),
        Fact("model settings", str(len(board.labels))),
        Fact("tasks (data versions)", str(len(board.groups))),
    ]
    tasks = [g.task for g in board.groups]
    nav = [
        (g.anchor, g.task if tasks.count(g.task) == 1 else f"{g.task} · {g.content_hash[:6]}")
        for g in board.groups
    ]
    nav.append(("runs", "Runs"))
    groups = [_group(board, group, base) for group in board.groups]
    runs = [
        {
            "run": run,
            "link": link(run, base),
            "rows": ", ".join(run.record.models),
            "tasks": ", ".join(run.record.tasks),
            "commit": run.record.environment.git_commit or "",
        }
        for run in reversed(board.runs)
    ]
    return render_page(
        "leaderboard.html.j2",
        "aigc-eval leaderboard",
        nav,
        facts=facts,
        notes=board.notes,
        groups=groups,
        runs=runs,
    )


def _group(board: Leaderboard, group: TaskGroup, base: Path) -> dict[str, Any]:
    rows = []
    for setting in group.settings:
        cells = []
        for metric, hib in group.metrics.items():
            history = group.cells.get((setting, metric), [])
            if not history:
                cells.append(BoardCell(None))
                continue
            point = history[-1]
            column = (group.latest(s, metric) for s in group.settings)
            when = f"{point.run.run_id} ({short_time(point.run.finished)})"
            title = f"{when}, {len(history)} run(s); {point.signature}"
            if point.ci is not None and point.ci.low is not None:
                title += f"; interval: {interval_label(point.ci)}"
            drawn = finite_points(history)
            trend = None
            if len(drawn) > 1:
                trend = sparkline([p.score for p in drawn], history_text(drawn), changed_method(drawn))  # type: ignore[misc]
            cells.append(
                BoardCell(
                    point,
                    best=is_best(point.score, (p.score for p in column if p), hib),
                    link=link(point.run, base),
                    title=title,
                    ci=ci_text(point.score, point.ci),
                    changed=any(changed_method(history)),
                    trend=trend,
                )
            )
        config = board.details.get(setting, {})
        rows.append({"label": board.labels[setting], "describe": _describe(config), "cells": cells})
    runs = len({id(p.run) for history in group.cells.values() for p in history})
    facts = f"data sha256 {group.content_hash[:12]} · n={group.n} · {runs} run(s)"
    return {"group": group, "facts": facts, "rows": rows}


def _describe(config: dict[str, Any]) -> str:
    generation = config.get("generation", {})
    parts = [f"{k}={v}" for k, v in config.items() if k != "generation" and v not in (None, False, [])]
    parts += [f"{k}={v}" for k, v in generation.items() if v not in (None, [])]
    return ", ".join(parts)


# --- markdown and csv ----------------------------------------------------------------------------


def _md(text: Any) -> str:
    return str(text).translate(_MARKDOWN)


def text_sparkline(values: list[float]) -> str:
    """'▁▃█': a trend in block characters, for terminals and pull requests."""
    lo, hi = min(values), max(values)
    span = hi - lo
    if span <= 1e-12 * max(abs(lo), abs(hi)):
        return _BLOCKS[0] * len(values)
    return "".join(_BLOCKS[round((v - lo) / span * (len(_BLOCKS) - 1))] for v in values)


def to_markdown(board: Leaderboard, base: Path) -> str:
    lines = [
        "# Leaderboard",
        "",
        f"{len(board.runs)} runs under `{_md(board.runs_dir)}`; the latest score of each model setting per "
        "task and metric, with its trend over runs (oldest → newest).",
        "",
    ]
    for group in board.groups:
        lines += [f"## {_md(group.task)} · data {group.content_hash[:12]} · n={group.n}", ""]
        heads = " | ".join(f"{_md(m)}{ARROWS[h]}" for m, h in group.metrics.items())
        lines.append(f"| model setting | {heads} | latest run |")
        lines.append("|---|" + "---:|" * len(group.metrics) + "---|")
        for setting in group.settings:
            cells, newest = [], None
            for metric in group.metrics:
                history = group.cells.get((setting, metric), [])
                if not history:
                    cells.append("")
                    continue
                point = history[-1]
                text = format_with_interval(point.score, point.ci)
                drawn = finite_points(history)
                if len(drawn) > 1:
                    text += f" {text_sparkline([p.score for p in drawn])}"  # type: ignore[misc]
                if any(changed_method(history)):
                    text += " ⚠"
                cells.append(text)
                if newest is None or (point.run.finished, point.run.run_id) > (
                    newest.finished,
                    newest.run_id,
                ):
                    newest = point.run
            run = f"[{_md(newest.run_id)}]({link(newest, base)})" if newest else ""
            lines.append(f"| {_md(board.labels[setting])} | " + " | ".join(cells) + f" | {run} |")
        lines.append("")
    if any(any(changed_method(h)) for g in board.groups for h in g.cells.values()):
        lines += [
            "⚠: the metric's signature changed within that trend; earlier points are not comparable.",
            "",
        ]
    lines += [f"- {_md(note)}" for note in board.notes]
    return "\n".join(lines).rstrip() + "\n"


CSV_COLUMNS = (
    "task",
    "data_sha256",
    "n",
    "model_setting",
    "metric",
    "higher_is_better",
    "score",
    "ci_low",
    "ci_high",
    "run_id",
    "finished",
    "run_dir",
    "n_runs",
    "history",
    "signature",
)


def to_csv(board: Leaderboard) -> str:
    """One line per cell (long format): easy to load into a spreadsheet or a dataframe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in board.groups:
        for setting in group.settings:
            for metric, hib in group.metrics.items():
                history = group.cells.get((setting, metric), [])
                if not history:
                    continue
                point = history[-1]
                ci = point.ci
                writer.writerow(
                    [
                        group.task,
                        group.content_hash,
                        group.n,
                        board.labels[setting],
                        metric,
                        "" if hib is None else str(hib).lower(),
                        "" if point.score is None else repr(point.score),
                        "" if ci is None or ci.low is None else repr(ci.low),
                        "" if ci is None or ci.high is None else repr(ci.high),
                        point.run.run_id,
                        point.run.finished,
                        str(point.run.path),
                        len(history),
                        ";".join(f"{p.run.finished}={p.score!r}" for p in history),
                        point.signature,
                    ]
                )
    return out.getvalue()
