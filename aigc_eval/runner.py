"""Orchestration: suite → generations (appended as they finish) → scores → run folder.

Resume works because each model row × task keeps an append-only generation log
keyed by a hash of everything that determines its outputs; metrics are always
recomputed from the saved generations (cheap next to generation).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aigc_eval.backends import create_backend
from aigc_eval.backends.base import Backend, TokenLogLikelihood
from aigc_eval.compare import IMPROVEMENT, REGRESSION, Comparison, compare_runs
from aigc_eval.config import MetricSpec, ModelRow, Suite, load_suite, stable_hash
from aigc_eval.data import ImageTaskData, TaskData, load_image_task, load_task
from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Score
from aigc_eval.metrics.registry import MODEL_METRICS, build_metric
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
    new_run_dir,
    now_iso,
    write_atomic,
    write_json,
    write_jsonl,
)
from aigc_eval.scoring import aggregate_with_intervals

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
        local = self._base_dir / path
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

    def scorer(self, spec: MetricSpec, row: ModelRow, where: str) -> MemoizedScorer:
        """The model a perplexity-style metric scores with: a named row, a path, or the row's own."""
        name = spec.options.get("model")
        local = name is not None and name not in self._rows and name.startswith((".", "/", "~"))
        if local and not Path(self.resolve_path(name)).exists():
            raise UserError(f"{where}.model: {name!r} is neither a model row name nor an existing path")
        target = _scoring_row(name, row, self._rows)
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
    return run_dir / GENERATIONS_DIR / f"{row.name}__{data.task.name}.jsonl"


def generate_for(
    backend: Backend, row: ModelRow, data: TaskData, run_dir: Path, progress: ProgressFactory
) -> tuple[list[str], dict[str, float]]:
    """Generate every example not already in the log, appending each batch as it finishes."""
    log = GenerationLog(_log_path(run_dir, row, data), _generation_key(row, data))
    done = log.load()
    examples = data.examples
    advance = progress(f"generate {row.name} × {data.task.name}", len(examples))
    advance(len(done))
    new_texts: list[str] = []

    def on_batch(indices: list[int], texts: list[str]) -> None:
        log.append(
            [{"index": i, "id": examples[i].id, "prediction": t} for i, t in zip(indices, texts, strict=True)]
        )
        done.update(zip(indices, texts, strict=True))
        new_texts.extend(texts)
        advance(len(indices))

    started = time.perf_counter()
    if len(done) < len(examples):
        backend.generate(
            [e.prompt for e in examples], row.generation.settings(), on_batch=on_batch, skip=set(done)
        )
    elapsed = time.perf_counter() - started
    timing: dict[str, float] = {"resumed_samples": len(examples) - len(new_texts)}
    if new_texts:
        tokens = backend.count_tokens(new_texts)
        timing.update(
            generation_s=round(elapsed, 4),
            generated_tokens=tokens,
            tokens_per_s=round(tokens / elapsed, 2) if elapsed > 0 else float("nan"),
        )
    return [done[i] for i in range(len(examples))], timing


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
        scorer = pool.scorer(spec, row, where) if spec.name in MODEL_METRICS else None
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
    from aigc_eval.image_scoring import score_images

    task = data.task
    started = time.perf_counter()
    generated = pool.resolve_path(row.images[task.name])
    scores = score_images(
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
        {s.name: s for s in scores.values()},
        timing=timing,
        generated_images=generated,
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
    """Run a suite end to end and return its run folder."""
    suite_path = Path(suite_path)
    suite, base_dir = load_suite(suite_path)
    if device:
        suite = suite.model_copy(
            update={"models": [m.model_copy(update={"device": device}) for m in suite.models]}
        )
    tasks = [load_task(t, base_dir, limit) for t in suite.tasks if t.kind == "text"]
    image_tasks = [load_image_task(t, base_dir) for t in suite.tasks if t.kind == "image"]
    config_hash = suite.config_hash()
    run_dir = _prepare_run_dir(suite, suite_path, Path(output_dir), config_hash, resume, limit)

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


def _prepare_run_dir(
    suite: Suite,
    suite_path: Path,
    output_dir: Path,
    config_hash: str,
    resume: str | Path | None,
    limit: int | None,
) -> Path:
    manifest = {
        "suite": suite.name,
        "config_hash": config_hash,
        "limit": limit,
        "suite_file": str(suite_path),
    }
    if resume is None:
        run_dir = new_run_dir(output_dir, suite.name, config_hash)
        write_json(run_dir / MANIFEST_FILE, {**manifest, "started": now_iso()})
        shutil.copyfile(suite_path, run_dir / "suite.yaml")
        return run_dir
    run_dir = Path(resume)
    manifest_file = run_dir / MANIFEST_FILE
    if not manifest_file.is_file():
        raise UserError(
            f"{run_dir}: not a run folder (no {MANIFEST_FILE}); pass a folder made by 'aigc-eval run'"
        )
    previous = json.loads(manifest_file.read_text(encoding="utf-8"))
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
    return run_dir


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
            "scores": {name: values[i] for name, values in o.sample_scores.items()},
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
