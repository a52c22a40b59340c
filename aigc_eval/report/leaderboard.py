"""The leaderboard: the latest score of every model setting on every task, across all runs in a folder.

A cell is keyed by (model setting, task data, metric output). A model setting is a row's name plus
everything that decides its generations (path, revision, dtype, decoding; the batch size of a sampling
row, whose seeds are per batch), so a changed temperature
starts a new line instead of continuing an old one. Task data is the task name plus the content hash
of its file and the number of samples scored: runs on other references or another --limit are never
mixed into one number or one trend, they get their own table. Each cell keeps its history over runs
(oldest first), drawn as a trend line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from aigc_eval.errors import UserError
from aigc_eval.report.html import (
    ARROWS,
    REPORT_FILE,
    ci_text,
    esc,
    is_best,
    page,
    short_time,
    sort_key,
    sparkline,
)
from aigc_eval.report.tables import format_score, format_with_interval, interval_label
from aigc_eval.results import RESULTS_FILE, load_results

Format = Literal["html", "md", "csv"]
_BLOCKS = "▁▂▃▄▅▆▇█"
_NOT_IN_SETTING = ("name", "device")  # they do not change what a row generates


def _setting(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a row's generations. Sampling seeds each batch, so a sampling row's batch size
    changes its text; greedy and beam outputs do not depend on it."""
    sampling = bool((config.get("generation") or {}).get("do_sample"))
    return {k: v for k, v in config.items() if k not in _NOT_IN_SETTING and (sampling or k != "batch_size")}


_MARKDOWN = str.maketrans(
    {c: f"\\{c}" for c in "|\\*`[]"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ", "\r": " "}
)


@dataclass(frozen=True)
class Run:
    path: Path
    results: dict[str, Any]

    @property
    def finished(self) -> str:
        return str(self.results.get("finished") or "")

    @property
    def run_id(self) -> str:
        return str(self.results["run_id"])


@dataclass(frozen=True)
class Point:
    """One run's score of one cell."""

    run: Run
    score: float
    ci: dict[str, Any] | None
    signature: str

    @property
    def method(self) -> str:
        """The signature without its bootstrap settings: what must match for scores to compare."""
        return "|".join(p for p in self.signature.split("|") if not p.startswith(("bs:", "ci:", "seed:")))


@dataclass
class TaskGroup:
    """One task on one version of its data: the unit within which results are comparable."""

    task: str
    content_hash: str
    n: int
    settings: list[str] = field(default_factory=list)
    metrics: dict[str, bool | None] = field(default_factory=dict)  # output -> higher_is_better
    cells: dict[tuple[str, str], list[Point]] = field(default_factory=dict)  # (setting, output) -> history

    @property
    def anchor(self) -> str:
        return f"task-{self.task}-{self.content_hash[:8]}-{self.n}"

    def latest(self, setting: str, metric: str) -> Point | None:
        history = self.cells.get((setting, metric))
        return history[-1] if history else None


@dataclass
class Leaderboard:
    runs_dir: Path
    runs: list[Run]  # oldest first
    groups: list[TaskGroup]
    labels: dict[str, str]  # setting key -> the name shown
    details: dict[str, dict[str, Any]]  # setting key -> its configuration
    notes: list[str]


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


def collect(runs_dir: Path) -> Leaderboard:
    """Read every results.json under ``runs_dir``; unreadable ones become notes, not failures."""
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: not a folder; pass the folder that 'aigc-eval run' wrote runs into")
    runs, notes = [], []
    for file in sorted(runs_dir.rglob(RESULTS_FILE)):
        try:
            runs.append(Run(file.parent, load_results(file)))
        except UserError as error:
            notes.append(f"skipped: {error}")
    if not runs:
        raise UserError(
            f"{runs_dir}: no run folders (results.json) found under it; run 'aigc-eval run' first"
        )
    runs.sort(key=lambda r: (r.finished, r.run_id))

    groups: dict[tuple[str, str, int], TaskGroup] = {}
    keys: dict[tuple[str, str], str] = {}  # (name, config hash) -> setting key
    details: dict[str, dict[str, Any]] = {}
    for run in runs:
        configs = {m["name"]: m for m in run.results["suite"].get("models", [])}
        for entry in run.results["results"]:
            name = entry["model"]
            config = _setting(configs.get(name, {}))
            digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
            setting = keys.setdefault((name, digest), f"{name}#{digest[:8]}")
            details.setdefault(setting, config)
            info = run.results["tasks"][entry["task"]]
            key = (entry["task"], str(info.get("content_hash", "")), int(info.get("n", entry.get("n", 0))))
            group = groups.setdefault(key, TaskGroup(*key))
            if setting not in group.settings:
                group.settings.append(setting)
            for metric, value in entry["metrics"].items():
                group.metrics[metric] = value.get("higher_is_better")
                point = Point(run, value["score"], value.get("ci"), str(value.get("signature", "")))
                group.cells.setdefault((setting, metric), []).append(point)

    names = [name for name, _ in keys]
    labels = {
        key: name if names.count(name) == 1 else f"{name} ({key[-8:]})" for (name, _), key in keys.items()
    }
    ordered = sorted(groups.values(), key=lambda g: (g.task, -_last_run_index(g, runs)))
    for task in dict.fromkeys(g.task for g in ordered):
        versions = [g for g in ordered if g.task == task]
        if len(versions) > 1:
            notes.append(
                f"task {task!r} was run on {len(versions)} different data versions (file content or number "
                "of samples); each has its own table, never mixed"
            )
    return Leaderboard(runs_dir, runs, ordered, labels, details, notes)


def _last_run_index(group: TaskGroup, runs: list[Run]) -> int:
    order = {id(run): i for i, run in enumerate(runs)}
    return max(order[id(p.run)] for history in group.cells.values() for p in history)


def _link(run: Run, base: Path) -> str:
    """The run's report (or its results.json when it has none), relative to ``base``, URL-quoted."""
    target = run.path / REPORT_FILE
    if not target.is_file():
        target = run.path / RESULTS_FILE
    return quote(Path(os.path.relpath(target.resolve(), base)).as_posix())


def _history_text(history: list[Point]) -> list[str]:
    return [f"{short_time(p.run.finished)} · {p.run.run_id}: {format_score(p.score)}" for p in history]


def _changed_method(history: list[Point]) -> list[bool]:
    """Points whose scoring method (signature) differs from the latest: a trend break, not a change."""
    return [p.method != history[-1].method for p in history]


# --- html ----------------------------------------------------------------------------------------


def to_html(board: Leaderboard, base: Path) -> str:
    latest = board.runs[-1]
    facts = [
        ("runs folder", f"<code>{esc(board.runs_dir)}</code>"),
        ("runs", esc(len(board.runs))),
        ("latest run", esc(f"{short_time(latest.finished)} · {latest.run_id}")),
        ("model settings", esc(len(board.labels))),
        ("tasks (data versions)", esc(len(board.groups))),
    ]
    header = (
        '<div class="kicker">aigc-eval leaderboard</div><h1>Leaderboard</h1>'
        '<p class="desc">The latest score of each model setting per task and metric; the line under a '
        "score is its history over runs (oldest to newest). Scores link to the run that produced them.</p>"
        '<dl class="meta">' + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts) + "</dl>"
    )
    notes = "".join(f"<li>{esc(note)}</li>" for note in board.notes)
    body = f'<section id="notes"><ul class="notes">{notes}</ul></section>' if notes else ""
    body += "".join(_group_html(board, group, base) for group in board.groups) + _runs_html(board, base)
    tasks = [g.task for g in board.groups]
    nav = [
        (g.anchor, g.task if tasks.count(g.task) == 1 else f"{g.task} · {g.content_hash[:6]}")
        for g in board.groups
    ]
    nav.append(("runs", "Runs"))
    return page("aigc-eval leaderboard", header, nav, body)


def _group_html(board: Leaderboard, group: TaskGroup, base: Path) -> str:
    heads = "".join(
        f'<th class="num" data-col="{j + 1}">{esc(metric)}{ARROWS[hib]}</th>'
        for j, (metric, hib) in enumerate(group.metrics.items())
    )
    body = []
    for setting in group.settings:
        config = board.details.get(setting, {})
        label = esc(board.labels[setting])
        cells = [f'<th data-v="{label}" title="{esc(_describe(config))}">{label}</th>']
        for metric, hib in group.metrics.items():
            history = group.cells.get((setting, metric), [])
            if not history:
                cells.append('<td class="num" data-v="">–</td>')
                continue
            point = history[-1]
            column = (group.latest(s, metric) for s in group.settings)
            best = " best" if is_best(point.score, (p.score for p in column if p), hib) else ""
            changed = _changed_method(history)
            warn = (
                '<span class="mark changed" title="the scoring method (signature) changed across these runs: '
                'red points are not comparable with the latest">⚠</span>'
                if any(changed)
                else ""
            )
            trend = ""
            if len(history) > 1:
                trend = sparkline([p.score for p in history], _history_text(history), changed)
            when = f"{point.run.run_id} ({short_time(point.run.finished)})"
            title = f"{when}, {len(history)} run(s); {point.signature}"
            if point.ci and point.ci.get("low") is not None:
                title += f"; interval: {interval_label(point.ci)}"
            cells.append(
                f'<td class="num{best}" data-v="{sort_key(point.score)}" data-setting="{label}" '
                f'data-metric="{esc(metric)}"><a href="{esc(_link(point.run, base))}" title="{esc(title)}">'
                f"{format_score(point.score)}</a>{warn}"
                f'<span class="ci">{ci_text(point.score, point.ci)}</span>{trend}</td>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    runs = len({id(p.run) for history in group.cells.values() for p in history})
    facts = f"data sha256 {group.content_hash[:12]} · n={group.n} · {runs} run(s)"
    return (
        f'<section id="{esc(group.anchor)}">'
        f'<h2>{esc(group.task)} <span class="muted small">{esc(facts)}</span></h2>'
        '<div class="scroll"><table class="sortable leaderboard"><thead><tr>'
        f'<th data-col="0">model setting</th>{heads}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></section>"
    )


def _describe(config: dict[str, Any]) -> str:
    generation = config.get("generation", {})
    parts = [f"{k}={v}" for k, v in config.items() if k != "generation" and v not in (None, False, [])]
    parts += [f"{k}={v}" for k, v in generation.items() if v not in (None, [])]
    return ", ".join(parts)


def _runs_html(board: Leaderboard, base: Path) -> str:
    rows = "".join(
        f'<tr><td data-v="{esc(run.finished)}">{esc(short_time(run.finished))}</td>'
        f"<td>{esc(run.results.get('suite_name', ''))}</td>"
        f'<td><a href="{esc(_link(run, base))}">{esc(run.run_id)}</a></td>'
        f"<td>{esc(', '.join(run.results['models']))}</td><td>{esc(', '.join(run.results['tasks']))}</td>"
        f'<td class="mono">{esc(str(run.results.get("config_hash", ""))[:12])}</td>'
        f'<td class="mono">{esc(_commit(run)[:12])}</td></tr>'
        for run in reversed(board.runs)
    )
    return (
        '<section id="runs"><h2>Runs</h2><div class="scroll"><table class="sortable runs"><thead><tr>'
        '<th data-col="0">finished</th><th data-col="1">suite</th><th data-col="2">run</th><th>rows</th>'
        f"<th>tasks</th><th>config</th><th>commit</th></tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def _commit(run: Run) -> str:
    return str(run.results.get("environment", {}).get("git_commit") or "")


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
                if len(history) > 1:
                    text += f" {text_sparkline([p.score for p in history])}"
                if any(_changed_method(history)):
                    text += " ⚠"
                cells.append(text)
                if newest is None or (point.run.finished, point.run.run_id) > (
                    newest.finished,
                    newest.run_id,
                ):
                    newest = point.run
            run = f"[{_md(newest.run_id)}]({_link(newest, base)})" if newest else ""
            lines.append(f"| {_md(board.labels[setting])} | " + " | ".join(cells) + f" | {run} |")
        lines.append("")
    if any(any(_changed_method(h)) for g in board.groups for h in g.cells.values()):
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
                ci = point.ci or {}
                writer.writerow(
                    [
                        group.task,
                        group.content_hash,
                        group.n,
                        board.labels[setting],
                        metric,
                        "" if hib is None else str(hib).lower(),
                        repr(point.score),
                        "" if ci.get("low") is None else repr(ci["low"]),
                        "" if ci.get("high") is None else repr(ci["high"]),
                        point.run.run_id,
                        point.run.finished,
                        str(point.run.path),
                        len(history),
                        ";".join(f"{p.run.finished}={p.score!r}" for p in history),
                        point.signature,
                    ]
                )
    return out.getvalue()
