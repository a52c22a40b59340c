"""Orchestration: suite → generations (appended as they finish) → scores → run folder.

Resume works because each model row × task keeps an append-only generation log
keyed by a hash of everything that determines its outputs; metrics are always
recomputed from the saved generations (cheap next to generation).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aigc_eval.backends import create_backend
from aigc_eval.backends.base import Backend, TokenLogLikelihood
from aigc_eval.compare import IMPROVEMENT, REGRESSION, Comparison, compare_runs
from aigc_eval.config import MetricSpec, ModelRow, Suite, load_suite, stable_hash
from aigc_eval.data import ImageTaskData, TaskData, load_image_task, load_task
from aigc_eval.errors import UserError, attach_run_dir
from aigc_eval.metrics.base import Score
from aigc_eval.metrics.registry import MODEL_METRICS, build_metric
from aigc_eval.preflight import check_plan, local_path
from aigc_eval.report.html import write_run_report
from aigc_eval.report.tables import to_csv, to_markdown
from aigc_eval.results import (
    GENERATIONS_DIR,
    MANIFEST_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    SCHEMA_VERSION,
    STATS_FILE,
    GenerationLog,
    environment,
    finite_or_none,
    lock_run_dir,
    new_run_dir,
    now_iso,
    read_json_object,
    run_file,
    write_atomic,
    write_json,
    write_jsonl,
)
from aigc_eval.scoring import aggregate_with_intervals

if TYPE_CHECKING:
    from aigc_eval.image_scoring import ImageScoring

# (description, total) -> advance(n) callable; lets the CLI show a progress bar.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(_description: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass
class RowTaskOutcome:
    model: str
    task: str
    predictions: list[str]
    scores: dict[str, Score] = field(default_factory=dict)
    sample_scores: dict[str, list[float]] = field(default_factory=dict)
    stats: list[np.ndarray] = field(default_factory=list)  # per metric entry, aligned with suite.metrics
    timing: dict[str, float] = field(default_factory=dict)
    generated_images: str | None = None  # image tasks: the folder scored
    image: ImageScoring | None = None  # image tasks: features kept for compare, skipped files, device


class MemoizedScorer:
    """Remembers per-text log-likelihoods, so rows sharing a scoring model (e.g. the
    references' perplexity under one model) score each text once."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._memo: dict[tuple[Any, ...], TokenLogLikelihood] = {}

    def loglikelihood(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        stride: int | None = None,
        prepend_bos: bool = True,
        contexts: Sequence[str] | None = None,
        per_token: bool = False,
    ) -> list[TokenLogLikelihood]:
        options = (max_length, stride, prepend_bos, per_token)
        keys = [(t, contexts[i] if contexts else None, *options) for i, t in enumerate(texts)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._memo))
        if missing:
            fresh = self._backend.loglikelihood(
                [k[0] for k in missing],
                max_length,
                stride,
                prepend_bos,
                contexts=[k[1] for k in missing] if contexts else None,
                per_token=per_token,
            )
            self._memo.update(zip(missing, fresh, strict=True))
        return [self._memo[k] for k in keys]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class BackendPool:
    """Loads each distinct model once and frees it after its last use."""

    def __init__(self, suite: Suite, base_dir: Path) -> None:
        self._base_dir = base_dir
        self._loaded: dict[tuple[Any, ...], Backend] = {}
        self._scorers: dict[tuple[Any, ...], MemoizedScorer] = {}
        self._rows = {row.name: row for row in suite.models}
        self._index = {row.name: i for i, row in enumerate(suite.models)}
        self.seed = suite.seed

    def resolve_path(self, path: str) -> str:
        local = local_path(path, self._base_dir)
        return str(local.resolve()) if local.exists() else path

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Metric options naming files (an evaluate ``module``) resolve against the suite folder."""
        if isinstance(options.get("module"), str):
            return {**options, "module": self.resolve_path(options["module"])}
        return options

    def get(self, row: ModelRow) -> Backend:
        key = row.load_key()
        if key not in self._loaded:
            self._loaded[key] = self._create(row)
        return self._loaded[key]

    def _create(self, row: ModelRow) -> Backend:
        where = f"models[{self._index[row.name]}] ({row.name})" if row.name in self._index else row.name
        try:
            return create_backend(
                row.backend,
                path=self.resolve_path(row.path),
                revision=row.revision,
                dtype=row.dtype,
                device=row.device,
                batch_size=row.batch_size,
                trust_remote_code=row.trust_remote_code,
                chat=row.chat,
                system=row.system,
                fused_activations=row.fused_activations,
            )
        except UserError as error:
            raise UserError(f"{where}: {error}") from None

    def scorer(self, spec: MetricSpec, row: ModelRow) -> MemoizedScorer:
        """The model a perplexity-style metric scores with: a named row, a path (checked by
        ``check_plan``), or the row's own."""
        target = _scoring_row(spec.options.get("model"), row, self._rows)
        key = target.load_key()
        if key not in self._scorers:
            self._scorers[key] = MemoizedScorer(self.get(target))
        return self._scorers[key]

    def release_unused(self, keep: set[tuple[Any, ...]]) -> None:
        for key in list(self._loaded):
            if key not in keep:
                del self._loaded[key]
                self._scorers.pop(key, None)


def _generation_key(row: ModelRow, data: TaskData) -> str:
    settings = row.model_dump(mode="json", exclude={"name", "batch_size", "device"})
    return stable_hash(
        {
            "model": settings,
            "task": data.task.model_dump(mode="json"),
            "data": data.content_hash,
            "n": len(data.examples),
            "batch_size": row.batch_size,
        }
    )


def _log_path(run_dir: Path, row: ModelRow, data: TaskData) -> Path:
    return run_file(run_dir, GENERATIONS_DIR, f"{row.name}__{data.task.name}.jsonl")


def generate_for(
    backend: Backend, row: ModelRow, data: TaskData, run_dir: Path, progress: ProgressFactory
) -> tuple[list[str], dict[str, Any]]:
    """Generate every example not already in the log, appending each batch as it finishes."""
    log = GenerationLog(_log_path(run_dir, row, data), _generation_key(row, data))
    done = log.load()
    examples = data.examples
    prompts = [e.prompt for e in examples]
    settings = row.generation.settings()
    truncated = backend.truncated_prompts(prompts, settings)
    if truncated:
        warnings.warn(
            f"{row.name} × {data.task.name}: {truncated} of {len(prompts)} prompts do not fit the model's "
            f"context with max_new_tokens {settings.max_new_tokens}; cut from the left (lm-eval's rule)",
            stacklevel=2,
        )
    advance = progress(f"generate {row.name} × {data.task.name}", len(examples))
    advance(len(done))
    resumed = len(done)
    marks: list[tuple[float, int]] = []  # (when a new batch finished, tokens it generated)

    def on_batch(indices: list[int], texts: list[str], tokens: int | None = None) -> None:
        log.append(
            [{"index": i, "id": examples[i].id, "prediction": t} for i, t in zip(indices, texts, strict=True)]
        )
        done.update(zip(indices, texts, strict=True))
        # A backend that cannot count its generated tokens: re-tokenize the continuations.
        marks.append((time.perf_counter(), backend.count_tokens(texts) if tokens is None else tokens))
        advance(len(indices))

    started = time.perf_counter()
    if len(done) < len(examples):
        backend.generate(prompts, settings, on_batch=on_batch, skip=set(done))
    timing: dict[str, Any] = {"resumed_samples": resumed, "truncated_prompts": truncated}
    if marks:
        timing.update(throughput(started, marks))
    return [done[i] for i in range(len(examples))], timing


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


def score_row_task(
    pool: BackendPool,
    suite: Suite,
    row: ModelRow,
    data: TaskData,
    predictions: list[str],
    progress: ProgressFactory = _no_progress,
) -> tuple[dict[str, Score], dict[str, list[float]], list[np.ndarray]]:
    """Scores (with intervals), per-sample scores, and each metric's stats rows (kept for compare)."""
    references = [list(e.references) for e in data.examples]
    scores: dict[str, Score] = {}
    per_sample: dict[str, list[float]] = {}
    all_stats = []
    intervals = suite.intervals
    advance = progress(f"score {row.name} × {data.task.name}", len(suite.metrics))
    for index, spec in enumerate(suite.metrics):
        where = f"metrics[{index}]"
        scorer = pool.scorer(spec, row) if spec.name in MODEL_METRICS else None
        metric = build_metric(
            spec.name,
            pool.resolve_options(spec.options),
            lang=data.lang,
            scorer=scorer,
            prompts=[e.prompt for e in data.examples],
        )
        stats = metric.sample_stats(predictions, references)
        all_stats.append(stats)
        aggregated = aggregate_with_intervals(
            metric, stats, intervals.n_resamples, intervals.confidence, intervals.seed
        )
        for name, score in aggregated.items():
            if name in scores:
                raise UserError(
                    f"{where}: {name!r} is computed twice for task {data.task.name!r}; "
                    "remove the duplicate metric entry"
                )
            scores[name] = score
        per_sample.update(metric.sample_scores(stats))
        advance(1)
    return scores, per_sample, all_stats


def score_image_task(pool: BackendPool, row: ModelRow, data: ImageTaskData) -> RowTaskOutcome:
    """FID-style scores of the row's generated images against the task's reference set."""
    from aigc_eval.image_scoring import score_image_sets

    task = data.task
    started = time.perf_counter()
    generated = pool.resolve_path(row.images[task.name])
    scoring = score_image_sets(
        generated,
        data.reference if task.reference else None,
        task.image_metrics,
        backbone=task.backbone,
        backbone_path=pool.resolve_path(task.backbone_path) if task.backbone_path else None,
        device=row.device,
        skip_corrupt=task.skip_corrupt,
        seed=pool.seed,
    )
    timing = {"scoring_s": round(time.perf_counter() - started, 4)}
    # Keyed by the score's own name: a Fréchet distance on EfficientNet features is
    # "fd_efficientnet-lite0", never "fid".
    return RowTaskOutcome(
        row.name,
        task.name,
        [],
        {s.name: s for s in scoring.scores.values()},
        timing=timing,
        generated_images=generated,
        image=scoring,
    )


def _last_uses(suite: Suite) -> dict[tuple[Any, ...], int]:
    """Index of the last model row that needs each loaded model (as generator or scorer)."""
    last: dict[tuple[Any, ...], int] = {}
    rows = {r.name: r for r in suite.models}
    for i, row in enumerate(suite.models):
        last[row.load_key()] = i
        for spec in suite.metrics:
            if spec.name in MODEL_METRICS:
                last[_scoring_row(spec.options.get("model"), row, rows).load_key()] = i
    return last


def _scoring_row(name: str | None, row: ModelRow, rows: dict[str, ModelRow]) -> ModelRow:
    """What scores for ``row``: its own model, a named row, or a model path (in float32)."""
    if name is None:
        return row
    if name in rows:
        return rows[name]
    return ModelRow(name=name, path=name, device=row.device, dtype="float32")


@contextmanager
def _saving_progress_on_interrupt(run_dir: Path, suite_path: Path) -> Iterator[None]:
    """Ctrl-C or a user error mid-run: say where the finished generations are and how to go on."""
    resume = f"aigc-eval run {suite_path} --resume {run_dir}"
    try:
        yield
    except KeyboardInterrupt:
        raise UserError(
            f"interrupted; finished batches are saved in {run_dir}. Continue with: {resume}"
        ) from None
    except UserError as error:
        if not any((run_dir / GENERATIONS_DIR).glob("*.jsonl")):
            raise
        raise UserError(
            f"{error}\n(finished generations are saved; after the fix continue with: {resume})"
        ) from None


def run_suite(
    suite_path: str | Path,
    output_dir: str | Path = "reports",
    device: str | None = None,
    limit: int | None = None,
    resume: str | Path | None = None,
    progress: ProgressFactory = _no_progress,
) -> Path:
    """Run a suite end to end and return its run folder.

    Everything checkable is checked (``check_plan``) before a run folder exists or a model loads.
    The run folder is locked for the whole run, and any error escaping once it exists carries it
    (``attach_run_dir``), so the CLI can log an internal error there.
    """
    suite_path = Path(suite_path)
    suite, base_dir = load_suite(suite_path)
    if device:
        suite = suite.model_copy(
            update={"models": [m.model_copy(update={"device": device}) for m in suite.models]}
        )
    tasks = [load_task(t, base_dir, limit) for t in suite.tasks if t.kind == "text"]
    image_tasks = [load_image_task(t, base_dir) for t in suite.tasks if t.kind == "image"]
    check_plan(suite, base_dir, str(suite_path))
    config_hash = suite.config_hash()
    run_dir = _open_run_dir(suite, Path(output_dir), config_hash, resume)
    try:
        with lock_run_dir(run_dir):
            _write_manifest(run_dir, suite, suite_path, config_hash, resume is not None, limit)
            return _generate_and_score(
                suite, suite_path, base_dir, run_dir, tasks, image_tasks, config_hash, limit, progress
            )
    except BaseException as error:
        attach_run_dir(error, run_dir)
        raise


def _generate_and_score(
    suite: Suite,
    suite_path: Path,
    base_dir: Path,
    run_dir: Path,
    tasks: list[TaskData],
    image_tasks: list[ImageTaskData],
    config_hash: str,
    limit: int | None,
    progress: ProgressFactory,
) -> Path:
    """Every row × task in suite order, then the run folder's results and report."""
    pool = BackendPool(suite, base_dir)
    last_use = _last_uses(suite)
    outcomes: list[RowTaskOutcome] = []
    models: dict[str, dict[str, str]] = {}
    with _saving_progress_on_interrupt(run_dir, suite_path):
        for index, row in enumerate(suite.models):
            for image_task in image_tasks:
                if image_task.task.name in row.images:
                    outcomes.append(score_image_task(pool, row, image_task))
            if row.backend == "images":
                models[row.name] = {
                    "backend": "images",
                    **{t: pool.resolve_path(p) for t, p in row.images.items()},
                }
                continue
            backend = pool.get(row)
            models[row.name] = backend.describe()
            for data in tasks:
                predictions, timing = generate_for(backend, row, data, run_dir, progress)
                started = time.perf_counter()
                scores, per_sample, stats = score_row_task(pool, suite, row, data, predictions, progress)
                timing["scoring_s"] = round(time.perf_counter() - started, 4)
                outcomes.append(
                    RowTaskOutcome(row.name, data.task.name, predictions, scores, per_sample, stats, timing)
                )
            pool.release_unused({key for key, last in last_use.items() if last > index})

    write_run_outputs(run_dir, suite, config_hash, [*tasks, *image_tasks], models, outcomes, limit)
    comparison = _within_run_comparison(suite, run_dir)
    if comparison is not None:
        _record_significance(run_dir, comparison)
    write_run_report(run_dir, comparison)
    return run_dir


def _record_significance(run_dir: Path, comparison: Comparison) -> None:
    """Put the baseline-row verdicts into results.json, so every table marks them (▲ / ▼)."""
    results = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    results["significance"] = {
        "baseline": comparison.pairs[0][0],
        "test": comparison.test,
        "correction": comparison.correction,
        "marks": [
            {
                "model": e.current_model,
                "task": e.task,
                "metric": e.metric,
                "verdict": e.verdict,
                "p_corrected": e.p_corrected,
            }
            for e in comparison.entries
            if e.verdict in (REGRESSION, IMPROVEMENT)
        ],
    }
    write_json(run_dir / RESULTS_FILE, results)
    write_atomic(run_dir / "table.md", to_markdown(results))


def _within_run_comparison(suite: Suite, run_dir: Path) -> Comparison | None:
    """Every row against the suite's baseline row, for the significance marks in the report."""
    baseline = suite.regression.baseline
    kind = {m.name: m.backend for m in suite.models}.get(baseline)
    others = [m.name for m in suite.models if m.name != baseline and m.backend == kind]
    if baseline is None or not others:
        return None
    return compare_runs(run_dir, run_dir, suite.regression, pairs=[(baseline, row) for row in others])


def _open_run_dir(suite: Suite, output_dir: Path, config_hash: str, resume: str | Path | None) -> Path:
    """A new run folder, or the one to resume (which must be a run folder)."""
    if resume is None:
        return new_run_dir(output_dir, suite.name, config_hash)
    run_dir = Path(resume)
    if not (run_dir / MANIFEST_FILE).is_file():
        raise UserError(
            f"{run_dir}: not a run folder (no {MANIFEST_FILE}); pass a folder made by 'aigc-eval run'"
        )
    return run_dir


def _write_manifest(
    run_dir: Path, suite: Suite, suite_path: Path, config_hash: str, resumed: bool, limit: int | None
) -> None:
    """Record a new run; for a resumed one, check it is a run of this suite with the same --limit."""
    manifest_file = run_dir / MANIFEST_FILE
    if not resumed:
        manifest = {"suite": suite.name, "config_hash": config_hash, "limit": limit}
        write_json(manifest_file, {**manifest, "suite_file": str(suite_path), "started": now_iso()})
        shutil.copyfile(suite_path, run_dir / "suite.yaml")
        return
    previous = read_json_object(manifest_file, "run manifest")
    if previous.get("suite") != suite.name:
        raise UserError(f"{run_dir}: is a run of suite {previous.get('suite')!r}, not {suite.name!r}")
    if previous.get("limit") != limit:
        raise UserError(
            f"{run_dir}: was run with --limit {previous.get('limit')}; resume with the same --limit"
        )
    if previous.get("config_hash") != config_hash:
        # Metric changes are fine (scores are recomputed); the generation logs' own keys
        # catch changes that invalidate finished samples.
        write_json(manifest_file, {**previous, "config_hash": config_hash, "resumed": now_iso()})


def _task_record(data: TaskData | ImageTaskData) -> dict[str, Any]:
    if isinstance(data, ImageTaskData):
        return {
            "kind": "image",
            "path": str(data.reference),
            "content_hash": data.content_hash,
            "n": data.n,
            "lang": None,
            "backbone": data.task.backbone,
        }
    return {
        "kind": "text",
        "path": str(data.path),
        "content_hash": data.content_hash,
        "n": len(data.examples),
        "lang": data.lang,
    }


def write_run_outputs(
    run_dir: Path,
    suite: Suite,
    config_hash: str,
    tasks: list[TaskData | ImageTaskData],
    models: dict[str, dict[str, str]],
    outcomes: list[RowTaskOutcome],
    limit: int | None,
) -> None:
    """Write results.json, samples.jsonl and the tables, each atomically."""
    by_task = {t.task.name: t for t in tasks}
    references_kept: set[str] = set()  # image tasks whose reference features are written
    results = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_dir.name,
        "suite_name": suite.name,
        "config_hash": config_hash,
        "finished": now_iso(),
        "limit": limit,
        "suite": suite.model_dump(mode="json"),
        "environment": environment(),
        "models": models,
        "tasks": {t.task.name: _task_record(t) for t in tasks},
        "results": [
            {
                "model": o.model,
                "task": o.task,
                "n": len(o.predictions),
                "metrics": {name: s.to_dict() for name, s in o.scores.items()},
                "timing": o.timing,
                **({"generated_images": o.generated_images} if o.generated_images else {}),
                **(o.image.record(run_dir, o.model, o.task, references_kept) if o.image else {}),
            }
            for o in outcomes
        ],
    }
    samples = (
        {
            "model": o.model,
            "task": o.task,
            "id": example.id,
            "prompt": example.prompt,
            "prediction": prediction,
            "references": list(example.references),
            # A sample's undefined score (perplexity of an empty text) is null in strict JSON.
            "scores": {name: finite_or_none(values[i]) for name, values in o.sample_scores.items()},
        }
        for o in outcomes
        if o.predictions  # image tasks have no text samples
        for i, (example, prediction) in enumerate(zip(by_task[o.task].examples, o.predictions, strict=True))
    )
    stats_rows = (
        {
            "model": o.model,
            "task": o.task,
            "metric_index": index,
            "metric": spec.name,
            "options": spec.options,
            "lang": by_task[o.task].lang,
            "ids": [e.id for e in by_task[o.task].examples],
            "rows": rows.tolist(),
        }
        for o in outcomes
        if o.stats
        for index, (spec, rows) in enumerate(zip(suite.metrics, o.stats, strict=True))
    )
    write_jsonl(run_dir / SAMPLES_FILE, samples)
    write_jsonl(run_dir / STATS_FILE, stats_rows)
    write_json(run_dir / RESULTS_FILE, results)
    write_atomic(run_dir / "table.md", to_markdown(results))
    write_atomic(run_dir / "table.csv", to_csv(results))
