"""plan: a suite turned into work units, checked before anything runs.

A work unit is one model row × one task × one shard of that task's examples (or images). Its
``key`` hashes everything that determines its generations (model settings, task config, data
content, example count; not the batch size or the process count, which change no output): it keys
resume (a generation log records it). Units never depend on each other's files, so any process may
execute any unit; only one process finalizes. A run of ``N`` processes plans ``N`` shards per
row × task, and rank ``r`` executes shard ``r`` of each.

``make_plan`` writes nothing and loads no model: it reads the suite and the task data and runs the
plan checks (``preflight.check_plan``: capabilities, scoring models, context lengths, files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aigc_eval.backends import capabilities
from aigc_eval.config import ModelRow, Suite, load_suite, stable_hash
from aigc_eval.data import ImageTaskData, TaskData, load_image_task, load_task
from aigc_eval.preflight import check_plan


@dataclass(frozen=True)
class Shard:
    """Examples ``index, index + count, ...`` of a task: strided, so shards are balanced in length."""

    index: int = 0
    count: int = 1

    def indices(self, n: int) -> tuple[int, ...]:
        return tuple(range(self.index, n, self.count))

    @property
    def label(self) -> str:
        """Part of the unit's log name; empty for an unsharded unit (the log name of earlier versions)."""
        return "" if self.count == 1 else f"shard{self.index}of{self.count}"


@dataclass(frozen=True)
class WorkUnit:
    row: ModelRow
    task: str
    kind: Literal["text", "image"]
    key: str
    shard: Shard = Shard()

    @property
    def name(self) -> str:
        return f"{self.row.name} × {self.task}" + (f" [{self.shard.label}]" if self.shard.label else "")


@dataclass(frozen=True)
class Plan:
    suite: Suite
    suite_path: Path
    base_dir: Path
    config_hash: str
    limit: int | None
    text_tasks: dict[str, TaskData]
    image_tasks: dict[str, ImageTaskData]
    units: tuple[WorkUnit, ...]

    def task_data(self, name: str) -> TaskData | ImageTaskData:
        return self.text_tasks.get(name) or self.image_tasks[name]


def generation_key(row: ModelRow, data: TaskData) -> str:
    """What the generations of ``row`` on ``data`` depend on: not the row's name, device or batch
    size (sampling is seeded per example, so batching changes no output)."""
    settings = row.model_dump(mode="json", exclude={"name", "batch_size", "device", "device_map"})
    return stable_hash(
        {
            "model": settings,
            "task": data.task.model_dump(mode="json"),
            "data": data.content_hash,
            "n": len(data.examples),
        }
    )


def make_plan(
    suite_path: str | Path,
    device: str | None = None,
    limit: int | None = None,
    shards: int = 1,
) -> Plan:
    """Load the suite and its data, check everything checkable, and list the work units in suite
    order (per row: its image tasks, then every text task)."""
    suite_path = Path(suite_path)
    suite, base_dir = load_suite(suite_path)
    if device:
        suite = suite.model_copy(
            update={
                "models": [
                    m.model_copy(update={"device": device}) if "device" in type(m).model_fields else m
                    for m in suite.models
                ]
            }
        )
    text_tasks = {t.name: load_task(t, base_dir, limit) for t in suite.tasks if t.kind == "text"}
    image_tasks = {t.name: load_image_task(t, base_dir) for t in suite.tasks if t.kind == "image"}
    check_plan(suite, base_dir, str(suite_path))
    units: list[WorkUnit] = []
    for row in suite.models:
        for name in image_tasks:
            if name in row.images:
                key = stable_hash({"images": row.images[name], "task": name})
                units.extend(WorkUnit(row, name, "image", key, Shard(i, shards)) for i in range(shards))
        if not capabilities(row.backend).generate:
            continue
        for name, data in text_tasks.items():
            key = generation_key(row, data)
            units.extend(WorkUnit(row, name, "text", key, Shard(i, shards)) for i in range(shards))
    return Plan(
        suite, suite_path, base_dir, suite.config_hash(), limit, text_tasks, image_tasks, tuple(units)
    )
