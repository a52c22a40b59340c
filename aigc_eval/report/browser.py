"""The sample browser's data: per text task, every row's prediction of each sample with its scores
and its diff against the nearest reference. It is embedded as JSON that the page's script only ever
turns into text nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aigc_eval.record import RunRecord, SampleRecord
from aigc_eval.report.diff import char_diff, closest, word_diff
from aigc_eval.report.formatting import ARROWS
from aigc_eval.report.sections import task_outputs, text_tasks

MAX_SAMPLES = 1000  # per task embedded in the sample browser: keeps a report small enough to attach
CHAR_DIFF_LIMIT = 3000  # longer texts get the word diff only (difflib is quadratic)


def browser_data(
    record: RunRecord, samples: Sequence[SampleRecord], rows: list[str], colors: dict[str, str]
) -> dict[str, Any]:
    """What the sample browser shows, per task: samples with every row's prediction, scores and diffs."""
    texts = text_tasks(record)
    have_text = {e.model for e in record.results if e.task in texts}
    rows = [row for row in rows if row in have_text]  # rows that only made images have no samples
    index = {row: i for i, row in enumerate(rows)}
    tasks = []
    for task in texts:
        outputs = task_outputs(record, task)
        names = [n for n, _ in outputs]
        by_id: dict[str, dict[str, Any]] = {}
        for s in samples:
            if s.task != task or s.model not in index:
                continue
            entry = by_id.get(s.id)
            if entry is None:
                if len(by_id) >= MAX_SAMPLES:
                    continue
                entry = by_id[s.id] = {
                    "id": s.id,
                    "prompt": s.prompt,
                    "refs": list(s.references),
                    "preds": [None] * len(rows),
                }
            entry["preds"][index[s.model]] = _prediction(s, entry["refs"], names)
        tasks.append(
            {
                "name": task,
                "total": len({s.id for s in samples if s.task == task}),
                "metrics": [{"name": n, "higher_is_better": hib, "arrow": ARROWS[hib]} for n, hib in outputs],
                "samples": list(by_id.values()),
            }
        )
    return {"rows": [{"name": row, "color": colors[row]} for row in rows], "tasks": tasks}


def _prediction(sample: SampleRecord, refs: list[str], outputs: list[str]) -> dict[str, Any]:
    text = sample.prediction
    ref = closest(text, refs)
    reference = refs[ref] if refs else ""
    return {
        "text": text,
        "scores": [sample.scores.get(name) for name in outputs],
        "ref": ref,
        "w": word_diff(reference, text),
        "c": char_diff(reference, text) if max(len(text), len(reference)) <= CHAR_DIFF_LIMIT else None,
    }
