"""execute: one work unit — generate into the unit's own log, then per-sample statistics.

A unit reads and writes only its own generation log (``RunFolder.generation_log``), so units can run
in any order, in any process; a killed run resumes from the logs. Metrics are always recomputed from
the saved generations (cheap next to generation). Corpus scores are not made here: ``finalize``
aggregates the gathered rows.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from aigc_eval.backends.base import Backend, example_seed
from aigc_eval.cache import GenerationCache, generation_key
from aigc_eval.data import ImageTaskData, TaskData
from aigc_eval.metrics.base import MetricContext, SampleInputs
from aigc_eval.metrics.registry import build_metric, metric_class
from aigc_eval.plan import Plan, WorkUnit
from aigc_eval.pool import BackendPool
from aigc_eval.run_folder import RunFolder

if TYPE_CHECKING:
    from aigc_eval.image_scoring import ImageOutcome

# (description, total) -> advance(n) callable; lets the CLI show a progress bar.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def no_progress(_description: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass
class UnitResult:
    """What a unit produced: predictions and statistic rows for its examples (text), or image scores."""

    unit: WorkUnit
    indices: tuple[int, ...] = ()  # example indices, in the order of ``predictions`` and the rows
    predictions: list[str] = field(default_factory=list)
    stats: list[np.ndarray] = field(default_factory=list)  # per suite metric entry
    contexts: list[MetricContext] = field(default_factory=list)  # what each metric entry was built with
    timing: dict[str, Any] = field(default_factory=dict)
    image: ImageOutcome | None = None


def execute(
    plan: Plan,
    unit: WorkUnit,
    folder: RunFolder,
    pool: BackendPool,
    progress: ProgressFactory = no_progress,
    cache: GenerationCache | None = None,
) -> UnitResult:
    """Run one unit: an image unit extracts the features of its share of the images; a text unit
    generates what no log holds, then computes every metric entry's per-sample statistics."""
    if unit.kind == "image":
        return _execute_image(plan, unit, pool)
    data = plan.text_tasks[unit.task]
    if not unit.shard.indices(len(data.examples)):  # more processes than examples: nothing to do here
        return UnitResult(unit)
    backend = pool.get(unit.row)
    indices, predictions, timing = generate(backend, unit, data, folder, progress, cache)
    started = time.perf_counter()
    stats, contexts, scored_from_cache = sample_statistics(
        plan, unit, data, indices, predictions, pool, progress
    )
    timing["scoring_s"] = round(time.perf_counter() - started, 4)
    if scored_from_cache is not None:
        timing["scored_from_cache"] = scored_from_cache
    return UnitResult(unit, indices, predictions, stats, contexts, timing)


def generate(
    backend: Backend,
    unit: WorkUnit,
    data: TaskData,
    folder: RunFolder,
    progress: ProgressFactory,
    cache: GenerationCache | None = None,
) -> tuple[tuple[int, ...], list[str], dict[str, Any]]:
    """Generate every example of the unit that no log of its row × task holds and the cache lacks.

    Each example is sampled with its own seed (``example_seed``: generation seed, task, example id),
    so only the missing examples go to the backend, in any batches and any process, with the same
    outputs. Cache hits and new generations are appended to the unit's own log as they come.
    """
    row = unit.row
    settings = row.generation
    log = folder.generation_log(row.name, data.task.name, unit.key, unit.shard.label)
    log.load()  # checks the unit's own log (its key) before appending to it
    done = folder.finished_generations(row.name, data.task.name, unit.key)
    indices = unit.shard.indices(len(data.examples))
    examples = [data.examples[i] for i in indices]
    prompts = [e.prompt for e in examples]
    truncated = backend.truncated_prompts(prompts, settings)
    if truncated:
        warnings.warn(
            f"{row.name} × {data.task.name}: {truncated} of {len(prompts)} prompts do not fit the model's "
            f"context with max_new_tokens {settings.max_new_tokens}; cut from the left (lm-eval's rule)",
            stacklevel=2,
        )
    advance = progress(f"generate {unit.name}", len(examples))
    finished = {local: done[i] for local, i in enumerate(indices) if i in done}
    resumed = len(finished)
    advance(resumed)
    seeds = [example_seed(settings.seed, data.task.name, e.id) for e in examples]

    def record(local: list[int], texts: list[str], cached: bool = False) -> None:
        log.append(
            [
                {"index": indices[i], "id": examples[i].id, "prediction": t}
                | ({"cached": True} if cached else {})
                for i, t in zip(local, texts, strict=True)
            ]
        )
        finished.update(zip(local, texts, strict=True))
        advance(len(local))

    started = time.perf_counter()
    missing = [i for i in range(len(examples)) if i not in finished]
    keys: dict[int, str] = {}
    hits = 0
    if cache is not None and missing:
        identity = backend.cache_identity()
        keys = {
            i: generation_key(identity, settings, prompts[i], seeds[i] if settings.do_sample else None)
            for i in missing
        }
        found = cache.get_many(list(keys.values()))
        cached = [i for i in missing if keys[i] in found]
        if cached:
            record(cached, [found[keys[i]].text for i in cached], cached=True)
        hits = len(cached)
        missing = [i for i in missing if i not in finished]
    marks: list[tuple[float, int]] = []  # (when a new batch finished, tokens it generated)
    label = f"{row.backend}:{row.name}"

    def on_batch(
        part: list[int], texts: list[str], tokens: int | None = None, failed: Sequence[int] = ()
    ) -> None:
        local = [missing[i] for i in part]
        record(local, texts)
        if cache is not None:
            bad = {missing[i] for i in failed}  # recorded failures (empty predictions) are not kept
            cache.put_many(
                (keys[i], t, None, label) for i, t in zip(local, texts, strict=True) if i not in bad
            )
        # A backend that cannot count its generated tokens: re-tokenize the continuations.
        marks.append((time.perf_counter(), backend.count_tokens(texts) if tokens is None else tokens))

    if missing:
        backend.generate(
            [prompts[i] for i in missing], settings, on_batch=on_batch, seeds=[seeds[i] for i in missing]
        )
    timing: dict[str, Any] = {"resumed_samples": resumed, "truncated_prompts": truncated, "cache_hits": hits}
    if marks:
        timing.update(throughput(started, marks))
    timing["generation_s"] = round(time.perf_counter() - started, 4)  # cache look-ups included
    return indices, [finished[i] for i in range(len(examples))], timing


def throughput(started: float, marks: list[tuple[float, int]]) -> dict[str, Any]:
    """Generation time and tokens/s from per-batch (finish time, generated tokens) marks.

    tokens/s counts only generated tokens (never prompt tokens) and leaves out the first batch,
    which pays the warm-up (allocator, kernels, caches): its rate is the steady state. With one
    batch there is nothing left to time: None, never NaN.
    """
    total_tokens = sum(tokens for _, tokens in marks)
    timed_s = marks[-1][0] - marks[0][0]
    timed_tokens = total_tokens - marks[0][1]
    measurable = len(marks) > 1 and timed_s > 0
    return {
        "generation_s": round(marks[-1][0] - started, 4),
        "generated_tokens": total_tokens,
        "timed_tokens": timed_tokens if measurable else None,
        "timed_s": round(timed_s, 4) if measurable else None,
        "tokens_per_s": round(timed_tokens / timed_s, 2) if measurable else None,
        "tokens_per_s_method": (
            f"generated tokens / time over {len(marks) - 1} of {len(marks)} batches; "
            "the first (warm-up) left out"
            if measurable
            else "not measured: a single batch is all warm-up"
        ),
    }


def sample_statistics(
    plan: Plan,
    unit: WorkUnit,
    data: TaskData,
    indices: tuple[int, ...],
    predictions: list[str],
    pool: BackendPool,
    progress: ProgressFactory = no_progress,
) -> tuple[list[np.ndarray], list[MetricContext], int | None]:
    """Each metric entry's per-sample rows; model-backed ones get their scorer from the pool. Also
    how many texts those scorers took from the cache (None: no model-backed metric)."""
    examples = [data.examples[i] for i in indices]
    references = [list(e.references) for e in examples]
    prompts = [e.prompt for e in examples]
    advance = progress(f"score {unit.name}", len(plan.suite.metrics))
    all_stats, contexts = [], []
    scored_from_cache: int | None = None
    for spec in plan.suite.metrics:
        scorer = pool.scorer(spec, unit.row) if metric_class(spec.name).needs_scorer else None
        before = scorer.from_cache if scorer is not None else 0
        context = MetricContext(scorer=scorer.describe() if scorer is not None else None)
        metric = build_metric(spec.name, pool.resolve_options(spec.options), lang=data.lang, context=context)
        all_stats.append(metric.sample_stats(predictions, references, SampleInputs(prompts, scorer)))
        contexts.append(context)
        if scorer is not None:
            scored_from_cache = (scored_from_cache or 0) + scorer.from_cache - before
        advance(1)
    return all_stats, contexts, scored_from_cache


def _execute_image(plan: Plan, unit: WorkUnit, pool: BackendPool) -> UnitResult:
    """FID-style scores of the row's generated images against the task's reference set."""
    from aigc_eval.image_scoring import score_image_task

    data: ImageTaskData = plan.image_tasks[unit.task]
    task = data.task
    started = time.perf_counter()
    outcome = score_image_task(
        pool.resolve_path(unit.row.images[task.name]),
        data.reference if task.reference else None,
        task,
        device=getattr(unit.row, "device", None) or "auto",
        seed=plan.suite.seed,
        backbone_path=pool.resolve_path(task.backbone_path) if task.backbone_path else None,
    )
    return UnitResult(unit, timing={"scoring_s": round(time.perf_counter() - started, 4)}, image=outcome)
