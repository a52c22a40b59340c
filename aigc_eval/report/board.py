"""The leaderboard's data: every run record under a folder, grouped into comparable cells.

A cell is keyed by (model setting, task data, metric output). A model setting is a row's name plus
everything that decides its generations (path, revision, dtype, decoding; the batch size of a sampling
row, since runs before per-example seeds sampled per batch), so a changed temperature starts a new line
instead of continuing an old one. Task data is the task name plus the content hash of its file and the
number of samples scored: runs on other references or another --limit are never mixed into one number or
one trend, they get their own table. Each cell keeps its history over runs (oldest first).
Runs are read through ``RunFolder`` (old schema versions migrate on load).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aigc_eval.errors import UserError
from aigc_eval.record import Interval, RunRecord
from aigc_eval.report.formatting import format_score, short_time
from aigc_eval.report.html import REPORT_FILE
from aigc_eval.run_folder import RunFolder

_NOT_IN_SETTING = ("name", "device")  # they do not change what a row generates


def setting_of(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a row's generations. Sampling seeds each batch, so a sampling row's batch size
    changes its text; greedy and beam outputs do not depend on it."""
    sampling = bool((config.get("generation") or {}).get("do_sample"))
    return {k: v for k, v in config.items() if k not in _NOT_IN_SETTING and (sampling or k != "batch_size")}


@dataclass(frozen=True)
class Run:
    folder: RunFolder
    record: RunRecord

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def finished(self) -> str:
        return self.record.finished or ""

    @property
    def run_id(self) -> str:
        return self.record.run_id


@dataclass(frozen=True)
class Point:
    """One run's score of one cell."""

    run: Run
    score: float | None
    ci: Interval | None
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


def collect(runs_dir: Path) -> Leaderboard:
    """Read every run record under ``runs_dir`` (old schema versions migrate on load); unreadable
    ones become notes, not failures."""
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: not a folder; pass the folder that 'aigc-eval run' wrote runs into")
    runs, notes = [], []
    for file in sorted(runs_dir.rglob(RunFolder.RESULTS)):
        try:
            folder = RunFolder.open(file.parent)
            runs.append(Run(folder, folder.read_record()))
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
        configs = {m["name"]: m for m in run.record.suite.get("models", [])}
        for entry in run.record.results:
            name = entry.model
            config = setting_of(configs.get(name, {}))
            digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
            setting = keys.setdefault((name, digest), f"{name}#{digest[:8]}")
            details.setdefault(setting, config)
            info = run.record.tasks[entry.task]
            key = (entry.task, info.content_hash, info.n)
            group = groups.setdefault(key, TaskGroup(*key))
            if setting not in group.settings:
                group.settings.append(setting)
            for metric, score in entry.metrics.items():
                group.metrics[metric] = score.higher_is_better
                point = Point(run, score.score, score.ci, score.signature)
                group.cells.setdefault((setting, metric), []).append(point)

    names = [name for name, _ in keys]
    labels = {
        key: name if names.count(name) == 1 else f"{name} ({key[-8:]})" for (name, _), key in keys.items()
    }
    ordered = sorted(groups.values(), key=lambda g: (g.task, -last_run_index(g, runs)))
    for task in dict.fromkeys(g.task for g in ordered):
        versions = [g for g in ordered if g.task == task]
        if len(versions) > 1:
            notes.append(
                f"task {task!r} was run on {len(versions)} different data versions (file content or number "
                "of samples); each has its own table, never mixed"
            )
    return Leaderboard(runs_dir, runs, ordered, labels, details, notes)


def last_run_index(group: TaskGroup, runs: list[Run]) -> int:
    order = {id(run): i for i, run in enumerate(runs)}
    return max(order[id(p.run)] for history in group.cells.values() for p in history)


def link(run: Run, base: Path) -> str:
    """The run's report (or its results.json when it has none), relative to ``base``, URL-quoted."""
    target = run.folder.output_path(REPORT_FILE)
    if not target.is_file():
        target = run.folder.file(RunFolder.RESULTS)
    return quote(Path(os.path.relpath(target.resolve(), base)).as_posix())


def history_text(history: list[Point]) -> list[str]:
    return [f"{short_time(p.run.finished)} · {p.run.run_id}: {format_score(p.score)}" for p in history]


def changed_method(history: list[Point]) -> list[bool]:
    """Points whose scoring method (signature) differs from the latest: a trend break, not a change."""
    return [p.method != history[-1].method for p in history]


def finite_points(history: list[Point]) -> list[Point]:
    """The points a trend can draw: a null score (undefined on that run's input) has no height."""
    return [p for p in history if p.score is not None and math.isfinite(p.score)]
