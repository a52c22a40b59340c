"""The run record: the typed schema of everything a run writes (results.json, samples.jsonl, stats.jsonl).

These models are the single source of the schema: ``run_folder.RunFolder`` reads and writes them,
everything else uses their attributes, and ``docs/schema/`` holds their JSON Schema
(``python -m aigc_eval.record docs/schema``). Old schema versions are migrated on load
(``migrate``), so run folders written by earlier versions keep loading.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 2

IntervalKind = Literal["bootstrap-percentile", "subset-std", "draws-range", "none"]
_LEGACY_INTERVAL_KINDS = {"kid-subset-std": "subset-std", "disjoint-draws-min-max": "draws-range"}

Number = float | int | None
Detail = float | int | str | bool | None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Record):
    """An uncertainty interval of one score and how it was made (its ``kind``).

    bootstrap-percentile: resampled per-sample rows (``n_resamples``, ``confidence``); subset-std: KID
    ± the std over its subsets; draws-range: [min, max] of FID over disjoint draws of the generated set.
    """

    kind: IntervalKind
    low: float | None
    high: float | None
    mean: float | None = None
    half_width: float | None = None
    confidence: float | None = None
    n_resamples: int | None = None
    seed: int | None = None
    method: str | None = None
    n_subsets: int | None = None
    subset_size: int | None = None
    n_draws: int | None = None
    draw_size: int | None = None


class ScoreRecord(_Record):
    """One headline value with the signature that says exactly how it was made.

    ``score`` is null when the value is undefined on this input, and ``score_unavailable`` says why;
    ``ci_unavailable`` says why a score has no interval. ``details`` are the metric's own extra
    values (BLEU's brevity penalty, ROUGE's precision and recall, KID's std...).
    """

    score: float | None
    signature: str
    higher_is_better: bool | None = True
    details: dict[str, Detail] = Field(default_factory=dict)
    ci: Interval | None = None
    ci_unavailable: str | None = None
    score_unavailable: str | None = None

    @property
    def value(self) -> float:
        """The score as a float, NaN when undefined (for arithmetic and sorting)."""
        return math.nan if self.score is None else self.score


class Provenance(_Record):
    """Where a row's outputs came from, common to every backend (``Backend.describe()``)."""

    backend: str
    model: str | None = None
    revision: str | None = None
    weights_sha256: str | None = None
    dtype: str | None = None
    device: str | None = None
    context_length: int | None = None
    images: dict[str, str] = Field(default_factory=dict)  # image rows: task -> folder scored
    extra: dict[str, str] = Field(default_factory=dict)  # backend-specific facts (library versions...)


class TaskRecord(_Record):
    kind: Literal["text", "image"]
    path: str
    content_hash: str
    n: int
    lang: str | None = None
    backbone: str | None = None


class Timing(_Record):
    """Seconds and throughput of one row × task (generation fields are absent for image rows)."""

    resumed_samples: int | None = None
    truncated_prompts: int | None = None
    cache_hits: int | None = None  # samples taken from the generation cache instead of generated
    # Texts whose log-likelihood (perplexity) came from the cache instead of the model.
    scored_from_cache: int | None = None
    generation_s: float | None = None
    generated_tokens: int | None = None
    timed_tokens: int | None = None
    timed_s: float | None = None
    tokens_per_s: float | None = None
    tokens_per_s_method: str | None = None
    scoring_s: float | None = None


class SkippedImages(_Record):
    count: int
    files: list[str]


class ImageFeatureFiles(_Record):
    """Feature files of an image row × task, relative to the run folder (``compare`` resamples them)."""

    generated: str | None = None
    reference: str | None = None


class ResultEntry(_Record):
    """The scores of one model row on one task."""

    model: str
    task: str
    n: int
    metrics: dict[str, ScoreRecord]
    timing: Timing = Field(default_factory=Timing)
    generated_images: str | None = None
    features: ImageFeatureFiles | None = None
    device: str | None = None
    skipped_images: dict[str, SkippedImages] = Field(default_factory=dict)


class SignificanceMark(_Record):
    model: str
    task: str
    metric: str
    verdict: str
    p_corrected: float | None


class Significance(_Record):
    """Within-run verdicts of every row against the suite's baseline row (the ▲ / ▼ marks)."""

    baseline: str
    test: str
    correction: str
    marks: list[SignificanceMark] = Field(default_factory=list)


class Environment(_Record):
    python: str
    platform: str
    packages: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    processes: int = 1  # torch.distributed world size of the run (torchrun / accelerate launch)
    process_group: str | None = None  # its backend: gloo or nccl


class RunRecord(_Record):
    """results.json: what was run, on what, where, and the scores."""

    schema_version: Literal[2] = SCHEMA_VERSION
    run_id: str
    suite_name: str
    config_hash: str
    finished: str
    limit: int | None = None
    suite: dict[str, Any]
    environment: Environment
    models: dict[str, Provenance]
    tasks: dict[str, TaskRecord]
    results: list[ResultEntry]
    significance: Significance | None = None

    def entry(self, model: str, task: str) -> ResultEntry | None:
        return next((r for r in self.results if r.model == model and r.task == task), None)


class SampleRecord(_Record):
    """One line of samples.jsonl: a generated text with its inputs and per-sample scores."""

    model: str
    task: str
    id: str
    prompt: str
    prediction: str
    references: list[str]
    scores: dict[str, float | None] = Field(default_factory=dict)


class StatsRecord(_Record):
    """One line of stats.jsonl: a metric entry's per-sample statistic rows on one row × task.

    ``rows`` are what intervals and paired tests resample; the metric is rebuilt from ``metric``,
    ``options`` and ``lang`` to re-aggregate them.
    """

    model: str
    task: str
    metric_index: int
    metric: str
    options: dict[str, Any] = Field(default_factory=dict)
    lang: str | None = None
    ids: list[str]
    rows: list[list[Any]]

    @field_validator("ids", mode="before")
    @classmethod
    def _ids_are_text(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value


class Manifest(_Record):
    """run.json: written when a run starts, so ``--resume`` can check it continues the same run."""

    suite: str
    config_hash: str
    limit: int | None = None
    suite_file: str
    started: str
    resumed: str | None = None


# --- migrations: every older schema version to the current one -------------------------------------

_SCORE_FIELDS = {"score", "signature", "higher_is_better", "ci", "ci_unavailable", "score_unavailable"}
_HF_PROVENANCE = {"model", "revision", "weights_sha256", "dtype", "device", "context_length"}


def _score_v1(score: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in score.items() if k in _SCORE_FIELDS}
    out["details"] = {k: v for k, v in score.items() if k not in _SCORE_FIELDS}
    ci = out.get("ci")
    if isinstance(ci, dict):
        # The oldest folders named an image interval by its ``method`` only; text intervals had neither.
        kind = ci.get("kind") or _LEGACY_INTERVAL_KINDS.get(str(ci.get("method")), "bootstrap-percentile")
        out["ci"] = {**ci, "kind": _LEGACY_INTERVAL_KINDS.get(kind, kind)}
    return out


def _provenance_v1(described: dict[str, Any]) -> dict[str, Any]:
    if described.get("backend") == "images":
        return {"backend": "images", "images": {k: v for k, v in described.items() if k != "backend"}}
    out: dict[str, Any] = {"backend": described.get("backend", "hf")}
    for key, value in described.items():
        if key in _HF_PROVENANCE:
            out[key] = int(value) if key == "context_length" and str(value).isdigit() else (value or None)
        elif key != "backend":
            out.setdefault("extra", {})[key] = str(value)
    return out


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A results.json of any earlier schema version, in the current schema (unchanged if current)."""
    version = data.get("schema_version")
    if version == 1:
        data = {
            **data,
            "schema_version": 2,
            "models": {name: _provenance_v1(p) for name, p in data.get("models", {}).items()},
            "results": [
                {**r, "metrics": {name: _score_v1(s) for name, s in r.get("metrics", {}).items()}}
                for r in data.get("results", [])
            ],
        }
    return data


def export_schemas(folder: Path) -> list[Path]:
    """Write the JSON Schema of each run-folder file into ``folder`` (kept in ``docs/schema``)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in (
        ("results.schema.json", RunRecord),
        ("samples.schema.json", SampleRecord),
        ("stats.schema.json", StatsRecord),
        ("run.schema.json", Manifest),
    ):
        path = folder / name
        path.write_text(
            json.dumps(model.model_json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written.append(path)
    return written


if __name__ == "__main__":
    for path in export_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schema")):
        print(path)
