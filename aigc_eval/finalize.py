"""finalize: gathered rows → corpus scores with intervals → the run record → the run folder's files.

Only this step writes results, and only one process runs it. It aggregates every metric entry's
rows (``scoring.aggregate_with_intervals``), compares each row with the suite's baseline row in
memory (the ▲ / ▼ marks), writes results.json, samples.jsonl and stats.jsonl once, then hands the
record to the output writers (looked up in the writers registry: this module imports no
presentation code).
"""

from __future__ import annotations

from aigc_eval.data import ImageTaskData, TaskData
from aigc_eval.errors import UserError
from aigc_eval.files import finite_or_none
from aigc_eval.gate import IMPROVEMENT, REGRESSION, Comparison, compare_runs
from aigc_eval.gather import Gathered
from aigc_eval.metrics.base import Score
from aigc_eval.metrics.registry import build_metric
from aigc_eval.plan import Plan
from aigc_eval.pool import BackendPool
from aigc_eval.record import (
    Environment,
    Provenance,
    ResultEntry,
    RunRecord,
    SampleRecord,
    Significance,
    SignificanceMark,
    StatsRecord,
    TaskRecord,
    Timing,
)
from aigc_eval.run_folder import RunFolder, environment, now_iso
from aigc_eval.scoring import aggregate_with_intervals


def finalize(
    plan: Plan,
    folder: RunFolder,
    gathered: list[Gathered],
    models: dict[str, Provenance],
    pool: BackendPool,
    env: Environment | None = None,
) -> RunRecord:
    """Score, compare within the run, write the record and every output; returns the record.

    ``env`` is the environment to record (default: this process's, for a one-process run)."""
    suite = plan.suite
    entries: list[ResultEntry] = []
    samples: list[SampleRecord] = []
    stats_records: list[StatsRecord] = []
    references_kept: set[str] = set()  # image tasks whose reference features are written
    for item in gathered:
        if item.kind == "image":
            entries.append(_image_entry(folder, item, references_kept))
            continue
        data = plan.text_tasks[item.task]
        scores, per_sample = _text_scores(plan, item, data, pool)
        timing = Timing.model_validate(item.timing)
        entries.append(
            ResultEntry(
                model=item.model,
                task=item.task,
                n=len(item.predictions),
                metrics={name: s.to_record() for name, s in scores.items()},
                timing=timing,
            )
        )
        samples.extend(_samples(item, data, per_sample))
        stats_records.extend(_stats(plan, item, data))
    record = RunRecord(
        run_id=folder.path.name,
        suite_name=suite.name,
        config_hash=plan.config_hash,
        finished=now_iso(),
        limit=plan.limit,
        suite=suite.model_dump(mode="json"),
        environment=env or environment(),
        models=models,
        tasks={
            name: _task_record(data) for name, data in [*plan.text_tasks.items(), *plan.image_tasks.items()]
        },
        results=entries,
    )
    folder.write_samples(samples)
    folder.write_stats(stats_records)
    folder.hold_record(record)
    comparison = _within_run_comparison(plan, folder)
    if comparison is not None:
        record = record.model_copy(update={"significance": _significance(comparison)})
    folder.write_record(record)
    from aigc_eval.outputs import write_outputs

    write_outputs(folder, record, comparison)
    return record


def _text_scores(
    plan: Plan, item: Gathered, data: TaskData, pool: BackendPool
) -> tuple[dict[str, Score], dict[str, list[float]]]:
    intervals = plan.suite.intervals
    scores: dict[str, Score] = {}
    per_sample: dict[str, list[float]] = {}
    for index, (spec, rows, context) in enumerate(
        zip(plan.suite.metrics, item.stats, item.contexts, strict=True)
    ):
        metric = build_metric(spec.name, pool.resolve_options(spec.options), lang=data.lang, context=context)
        aggregated = aggregate_with_intervals(
            metric, rows, intervals.n_resamples, intervals.confidence, intervals.seed
        )
        for name, score in aggregated.items():
            if name in scores:
                raise UserError(
                    f"metrics[{index}]: {name!r} is computed twice for task {data.task.name!r}; "
                    "remove the duplicate metric entry"
                )
            scores[name] = score
        per_sample.update(metric.sample_scores(rows))
    return scores, per_sample


def _samples(item: Gathered, data: TaskData, per_sample: dict[str, list[float]]) -> list[SampleRecord]:
    return [
        SampleRecord(
            model=item.model,
            task=item.task,
            id=example.id,
            prompt=example.prompt,
            prediction=prediction,
            references=list(example.references),
            # A sample's undefined score (perplexity of an empty text) is null in strict JSON.
            scores={name: finite_or_none(values[i]) for name, values in per_sample.items()},
        )
        for i, (example, prediction) in enumerate(zip(data.examples, item.predictions, strict=True))
    ]


def _stats(plan: Plan, item: Gathered, data: TaskData) -> list[StatsRecord]:
    ids = [e.id for e in data.examples]
    return [
        StatsRecord(
            model=item.model,
            task=item.task,
            metric_index=index,
            metric=spec.name,
            options=spec.options,
            lang=data.lang,
            ids=ids,
            rows=rows.tolist(),
        )
        for index, (spec, rows) in enumerate(zip(plan.suite.metrics, item.stats, strict=True))
    ]


def _image_entry(folder: RunFolder, item: Gathered, references_kept: set[str]) -> ResultEntry:
    from aigc_eval.image_scoring import save_image_features

    outcome = item.image
    files = save_image_features(
        folder, item.model, item.task, outcome, write_reference=item.task not in references_kept
    )
    references_kept.add(item.task)
    return ResultEntry(
        model=item.model,
        task=item.task,
        n=outcome.generated.n,
        # Keyed by the score's own name: a Fréchet distance on EfficientNet features is
        # "fd_efficientnet-lite0", never "fid".
        metrics={s.name: s.to_record() for s in outcome.scores.values()},
        timing=Timing.model_validate(item.timing),
        generated_images=outcome.source,
        features=files,
        device=outcome.device,
        skipped_images=outcome.skipped_images(),
    )


def _task_record(data: TaskData | ImageTaskData) -> TaskRecord:
    if isinstance(data, ImageTaskData):
        return TaskRecord(
            kind="image",
            path=str(data.reference),
            content_hash=data.content_hash,
            n=data.n,
            backbone=data.task.backbone,
        )
    return TaskRecord(
        kind="text", path=str(data.path), content_hash=data.content_hash, n=len(data.examples), lang=data.lang
    )


def _within_run_comparison(plan: Plan, folder: RunFolder) -> Comparison | None:
    """Every row against the suite's baseline row (same backend kind), read from memory."""
    suite = plan.suite
    baseline = suite.regression.baseline
    kind = {m.name: m.backend for m in suite.models}.get(baseline)
    others = [m.name for m in suite.models if m.name != baseline and m.backend == kind]
    if baseline is None or not others:
        return None
    return compare_runs(folder, folder, suite.regression, pairs=[(baseline, row) for row in others])


def _significance(comparison: Comparison) -> Significance:
    return Significance(
        baseline=comparison.pairs[0][0],
        test=comparison.test,
        correction=comparison.correction,
        marks=[
            SignificanceMark(
                model=e.current_model,
                task=e.task,
                metric=e.metric,
                verdict=e.verdict,
                p_corrected=e.p_corrected,
            )
            for e in comparison.entries
            if e.verdict in (REGRESSION, IMPROVEMENT)
        ],
    )
