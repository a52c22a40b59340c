"""``compare_runs``: pair the rows and tasks of two runs, test every shared metric output, correct the
p-values across all of them (text and image together) and decide each verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from aigc_eval.config import Intervals, Regression
from aigc_eval.gate.metric_tests import DEFAULT_TRIALS, Pair, Setting, compare_entries
from aigc_eval.gate.model import Comparison, MetricComparison
from aigc_eval.gate.rules import correct, suite_regression, verdict
from aigc_eval.gate.runs import Side, check_paired, model_pairs, shared_tasks, top_changes
from aigc_eval.metrics.base import StoredMetric
from aigc_eval.run_folder import RunFolder


def compare_runs(
    baseline: RunFolder | str | Path,
    current: RunFolder | str | Path,
    regression: Regression | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> Comparison:
    """Test every shared task × metric of the paired model rows; rules default to CURRENT's suite.

    Each side is a run folder or its path. Everything is read through ``RunFolder`` (record, stats,
    samples, feature arrays), so a folder whose caches already hold what the pipeline just wrote, or
    the same folder on both sides (the within-run comparison), costs no further reads.
    """
    base = Side.open(baseline)
    cur = base if current is baseline else Side.open(current)
    rules = regression or suite_regression(cur.record)
    model_rows = model_pairs(base, cur, pairs)
    tasks, notes = shared_tasks(base, cur)
    setting = Setting(
        rules=rules,
        n_trials=rules.n_trials or DEFAULT_TRIALS[rules.test],
        intervals=Intervals.model_validate(cur.record.suite.get("intervals", {})),
    )
    raw: list[MetricComparison] = []
    for base_model, cur_model in model_rows:
        for task in tasks:
            base_entry, cur_entry = base.entry(base_model, task), cur.entry(cur_model, task)
            if base_entry is None and cur_entry is None:
                continue  # e.g. an image row on a text task: nothing to compare
            if base_entry is None or cur_entry is None:
                side, row = ("current", cur_model) if cur_entry else ("baseline", base_model)
                notes.append(f"task {task!r}: row {row!r} ran it only in the {side} run; not compared")
                continue
            if cur.record.tasks[task].kind == "image":
                stored = _image_metrics(base, base_model, task), _image_metrics(cur, cur_model, task)
            else:
                stored = check_paired(base, cur, base_model, cur_model, task)
            pair = Pair(base_model, cur_model, task, base_entry.metrics, cur_entry.metrics)
            found, task_notes = compare_entries(pair, *stored, setting)
            raw.extend(found)
            notes.extend(task_notes)

    tested = {i: e.p_value for i, e in enumerate(raw) if e.p_value is not None}
    corrected = dict(zip(tested, correct(list(tested.values()), rules.correction), strict=True))
    entries = []
    for i, entry in enumerate(raw):
        p = corrected.get(i)
        entry = replace(entry, p_corrected=p, verdict=verdict(entry, p))
        entries.append(replace(entry, top_changes=top_changes(base, cur, entry)))
    return Comparison(
        baseline=str(base.folder.path),
        current=str(cur.folder.path),
        test="paired-ar" if rules.test == "ar" else "paired-bs",
        n_trials=setting.n_trials,
        seed=rules.seed,
        correction=rules.correction,
        alpha=rules.alpha,
        pairs=tuple(model_rows),
        entries=tuple(entries),
        notes=tuple(notes),
        rules=tuple(rules.rules),
    )


def _image_metrics(side: Side, model: str, task: str) -> list[StoredMetric]:
    """The image metrics of one row × task over its generated images' feature rows (image_scoring)."""
    from aigc_eval.image_scoring import stored_image_metrics  # imports the image stack only when needed

    return stored_image_metrics(side.folder, side.record, model, task)
