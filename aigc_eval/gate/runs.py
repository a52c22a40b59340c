"""Both sides of a comparison as read through ``RunFolder``: the record, the per-sample files grouped by
row × task, the checks that two runs pair up, the text metrics rebuilt from stats.jsonl, and the
samples behind a verdict."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aigc_eval.errors import UserError
from aigc_eval.gate.model import IMPROVEMENT, MetricComparison, SampleChange
from aigc_eval.metrics.base import MetricContext, StoredMetric
from aigc_eval.metrics.registry import build_metric, metric_class
from aigc_eval.record import ResultEntry, RunRecord, SampleRecord, StatsRecord
from aigc_eval.run_folder import RunFolder

TOP_SAMPLES = 5
TEXT_LIMIT = 120


@dataclass
class Side:
    """One run of a comparison. The files come from the folder's caches, so a folder the pipeline has
    just written (or the same folder on both sides) is not read again."""

    folder: RunFolder
    record: RunRecord
    _stats: dict[tuple[str, str], list[StatsRecord]]
    _samples: dict[tuple[str, str], list[SampleRecord]]

    @classmethod
    def open(cls, run: RunFolder | str | Path) -> Side:
        """The record and both per-sample files, all read up front: a folder without them fails here."""
        folder = run if isinstance(run, RunFolder) else RunFolder.open(run)
        record = folder.read_record()
        stats: dict[tuple[str, str], list[StatsRecord]] = {}
        for line in folder.read_stats():
            stats.setdefault((line.model, line.task), []).append(line)
        samples: dict[tuple[str, str], list[SampleRecord]] = {}
        for sample in folder.read_samples():
            samples.setdefault((sample.model, sample.task), []).append(sample)
        return cls(folder, record, stats, samples)

    def entry(self, model: str, task: str) -> ResultEntry | None:
        return self.record.entry(model, task)

    def samples(self, model: str, task: str) -> list[SampleRecord]:
        return self._samples.get((model, task), [])

    def text_metrics(self, model: str, task: str) -> list[StoredMetric]:
        """Each metric entry of stats.jsonl rebuilt from its name, options and language, with its rows.

        A model-backed metric gets its scorer's provenance from the record (it names the scoring row,
        else the row scored itself); compare only re-aggregates rows, it never scores.
        """
        stored = []
        for stats in self._stats.get((model, task), []):
            scorer = None
            if metric_class(stats.metric).needs_scorer:
                scorer = self.record.models.get(stats.options.get("model") or model)
            metric = build_metric(stats.metric, stats.options, stats.lang, MetricContext(scorer=scorer))
            stored.append(StoredMetric(metric, rows_array(stats.rows), list(stats.ids)))
        return stored


def rows_array(values: list[list[Any]]) -> np.ndarray:
    """Rows as the runner wrote them: integer or float matrices, or object rows (n-grams, texts)."""
    cells = [cell for row in values for cell in row]
    width = len(values[0]) if values else 0
    if all(isinstance(c, int) for c in cells):  # sacrebleu's counts (bool is an int too)
        return np.array(values, dtype=np.int64).reshape(len(values), width)
    if all(isinstance(c, (int, float)) for c in cells):
        return np.array(values, dtype=np.float64).reshape(len(values), width)
    rows = np.empty((len(values), width), dtype=object)
    for i, row in enumerate(values):
        for j, cell in enumerate(row):  # cell by cell, so numpy never unpacks the nested lists
            rows[i, j] = cell
    return rows


def entry_key(stored: StoredMetric) -> str:
    """Two runs' metric entries are compared only when computed the same way (name, options, language)."""
    metric = stored.metric
    return json.dumps([metric.name, metric.options.model_dump(mode="json"), metric.lang], sort_keys=True)


def model_pairs(base: Side, cur: Side, pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Explicit pairs, else rows of equal name, else the only row of each run."""
    base_rows, cur_rows = list(base.record.models), list(cur.record.models)
    listing = f"baseline rows: {', '.join(base_rows)}; current rows: {', '.join(cur_rows)}"
    if pairs:
        for b, c in pairs:
            if b not in base_rows or c not in cur_rows:
                raise UserError(f"cannot pair {b!r} with {c!r}: no such row ({listing})")
        return list(pairs)
    shared = [(name, name) for name in base_rows if name in cur_rows]
    if shared:
        return shared
    if len(base_rows) == 1 and len(cur_rows) == 1:
        return [(base_rows[0], cur_rows[0])]
    raise UserError(f"no model rows to pair ({listing}); name the pairs with --pair BASELINE_ROW=CURRENT_ROW")


def shared_tasks(base: Side, cur: Side) -> tuple[list[str], list[str]]:
    """Tasks in both runs (current's order); a task in one run only is noted, not compared."""
    base_tasks, cur_tasks = base.record.tasks, cur.record.tasks
    shared = [t for t in cur_tasks if t in base_tasks]
    if not shared:
        raise UserError(
            f"the runs share no task (baseline: {', '.join(base_tasks)}; current: {', '.join(cur_tasks)}); "
            "compare runs of the same suite"
        )
    notes = [f"task {t!r} is only in the current run; not compared" for t in cur_tasks if t not in base_tasks]
    notes += [
        f"task {t!r} is only in the baseline run; not compared" for t in base_tasks if t not in cur_tasks
    ]
    for task in shared:
        hashes = base_tasks[task].content_hash, cur_tasks[task].content_hash
        if hashes[0] != hashes[1]:
            raise UserError(
                f"task {task!r}: the runs are not paired: its data file differs "
                f"(content hash {hashes[0][:12]} in the baseline, {hashes[1][:12]} in the current run); "
                "compare runs made on the same data"
            )
    return shared, notes


def check_paired(
    base: Side, cur: Side, base_model: str, cur_model: str, task: str
) -> tuple[list[StoredMetric], list[StoredMetric]]:
    """Both rows' text metrics, after checking each sample pairs with its twin: same sample ids in the
    same order, and the same references."""
    base_stored, cur_stored = base.text_metrics(base_model, task), cur.text_metrics(cur_model, task)
    if not base_stored or not cur_stored:
        side, row = ("baseline", base_model) if not base_stored else ("current", cur_model)
        raise UserError(f"task {task!r}: the {side} run has no statistics for row {row!r}")
    base_ids, cur_ids = base_stored[0].ids or [], cur_stored[0].ids or []
    if base_ids != cur_ids:
        raise UserError(
            f"task {task!r}: the runs are not paired: their sample ids differ "
            f"({len(base_ids)} samples in the baseline, {len(cur_ids)} in the current run"
            f"{_first_difference(base_ids, cur_ids)}); run both with the same data and --limit"
        )
    base_refs = [s.references for s in base.samples(base_model, task)]
    cur_refs = [s.references for s in cur.samples(cur_model, task)]
    if base_refs != cur_refs:
        changed = next((i for i, (a, b) in enumerate(zip(base_refs, cur_refs, strict=False)) if a != b), 0)
        raise UserError(
            f"task {task!r}: the runs are not paired: the references of sample {base_ids[changed]!r} "
            "differ; compare runs whose tasks read the same reference fields"
        )
    return base_stored, cur_stored


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"; sample {i} is {x!r} vs {y!r}"
    return ""


def top_changes(base: Side, cur: Side, entry: MetricComparison) -> tuple[SampleChange, ...]:
    """The samples that moved most in the verdict's direction: worst first, best first for improvements,
    largest first for metrics without a direction. Unpaired rows (images) have none."""
    base_samples = base.samples(entry.baseline_model, entry.task)
    cur_samples = cur.samples(entry.current_model, entry.task)
    changes = []
    for b, c in zip(base_samples, cur_samples, strict=True):
        before, after = b.scores.get(entry.metric), c.scores.get(entry.metric)
        if before is None or after is None or math.isnan(before) or math.isnan(after) or before == after:
            continue
        changes.append((b, c, before, after))
    if entry.higher_is_better is None:
        changes.sort(key=lambda x: -abs(x[3] - x[2]))
    else:
        sign = 1 if entry.higher_is_better else -1
        if entry.verdict == IMPROVEMENT:
            sign = -sign
        changes.sort(key=lambda x: sign * (x[3] - x[2]))
    return tuple(
        SampleChange(
            id=b.id,
            baseline=before,
            current=after,
            delta=after - before,
            prompt=truncate(b.prompt),
            reference=truncate(b.references[0] if b.references else ""),
            baseline_prediction=truncate(b.prediction),
            current_prediction=truncate(c.prediction),
        )
        for b, c, before, after in changes[:TOP_SAMPLES]
    )


def truncate(text: str, limit: int = TEXT_LIMIT) -> str:
    """Texts in reports stay short enough for a pull-request comment."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
