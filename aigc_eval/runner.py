"""The run: plan → execute every unit → gather → finalize, inside one locked run folder.

Everything checkable is checked (``plan.make_plan``) before a run folder exists or a model loads.
Resume works because each unit keeps an append-only generation log keyed by the unit's ``key``;
scores are always recomputed from the saved generations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from aigc_eval.backends import create_backend
from aigc_eval.cache import GenerationCache
from aigc_eval.distributed import World, process_group, rank_device, world_from_env
from aigc_eval.errors import UserError, attach_run_dir
from aigc_eval.execute import ProgressFactory, UnitResult, execute, no_progress
from aigc_eval.finalize import finalize
from aigc_eval.gather import gather
from aigc_eval.plan import Plan, WorkUnit, make_plan
from aigc_eval.pool import BackendPool, scoring_rows
from aigc_eval.record import Manifest, Provenance
from aigc_eval.run_folder import RunFolder, environment, now_iso


def run_suite(
    suite_path: str | Path,
    output_dir: str | Path = "reports",
    device: str | None = None,
    limit: int | None = None,
    resume: str | Path | None = None,
    progress: ProgressFactory = no_progress,
    cache: bool = True,
) -> RunFolder:
    """Run a suite end to end and return its run folder.

    Under torchrun (``aigc_eval.distributed``) every process runs this: each executes its shard of
    every unit, rank 0 gathers the rows and alone locks, finalizes and writes the run folder (the
    other ranks return it unfinalized). The run folder is locked for the whole run, and any error
    escaping once it exists carries it (``attach_run_dir``), so the CLI can log an internal error there.
    ``cache`` False neither reads nor writes the generation cache (``aigc_eval.cache``).
    """
    world = world_from_env()
    with process_group(world) as group:
        plan = make_plan(suite_path, device=_rank_device(world, device), limit=limit, shards=world.size)
        if world.distributed:
            _check_distributable(plan)
        # Rank 0 makes (or checks) the run folder and tells the others its path. Any error in any
        # rank stops that process; the launcher then stops the others (every finished batch is in
        # the generation logs, so the run resumes, with any number of processes).
        path = str(_open_folder(plan, Path(output_dir), resume).path) if world.is_main else None
        folder = RunFolder(group.broadcast(path))
        try:
            with folder.lock() if world.is_main else nullcontext():
                if world.is_main:
                    _start(folder, plan, resumed=resume is not None)
                with _saving_progress_on_interrupt(folder, plan.suite_path):
                    with GenerationCache.open() if cache else nullcontext() as generation_cache:
                        rank_progress = progress if world.is_main else no_progress
                        results, models, pool = _execute_all(
                            plan, folder, rank_progress, generation_cache, world
                        )
                    gathered = group.gather(results)
                    if gathered is None:  # not rank 0: its rows went to rank 0, which finalizes
                        return folder
                    env = environment().model_copy(
                        update={"processes": world.size, "process_group": group.backend}
                    )
                    finalize(plan, folder, gather([r for part in gathered for r in part]), models, pool, env)
            return folder
        except BaseException as error:
            attach_run_dir(error, folder.path)
            raise


def _execute_all(
    plan: Plan, folder: RunFolder, progress: ProgressFactory, cache: GenerationCache | None, world: World
) -> tuple[list[UnitResult], dict[str, Provenance], BackendPool]:
    """This process's units in plan order; each model is loaded once and freed after the last unit
    needing it."""
    pool = BackendPool(plan.suite, plan.base_dir, cache)
    units = [unit for unit in plan.units if unit.shard.index == world.rank]
    last_use = _last_uses(units, plan)
    results: list[UnitResult] = []
    models: dict[str, Provenance] = {}
    for position, unit in enumerate(units):
        row = unit.row
        if row.name not in models and unit.kind == "text":
            models[row.name] = pool.get(row).describe()
        results.append(execute(plan, unit, folder, pool, progress, cache))
        pool.release_unused({key for key, last in last_use.items() if last > position})
    if not world.is_main:
        return results, models, pool
    for row in plan.suite.models:  # rows that only bring images: their own provenance, not a shared one
        if row.name not in models:
            models[row.name] = create_backend(row.with_paths(pool.resolve_path)).describe()
    return results, {row.name: models[row.name] for row in plan.suite.models}, pool


def _rank_device(world: World, device: str | None) -> str | None:
    """The device of this process: ``--device`` as given in one process; under torchrun each rank
    takes its own GPU (``cuda`` or no --device → ``cuda:LOCAL_RANK``) or the CPU."""
    if not world.distributed:
        return device
    if device in (None, "auto", "cuda"):
        return rank_device(world)
    return device


def _check_distributable(plan: Plan) -> None:
    """Rows whose own engine spreads a model over devices cannot also be one copy per torchrun rank."""
    for number, row in enumerate(plan.suite.models):
        if row.backend == "vllm":
            raise UserError(
                f"{plan.suite_path}: models[{number}] ({row.name}) uses the vllm backend, which runs its own "
                "workers; run it without torchrun and set tensor_parallel_size / data_parallel_size on "
                "the row (see docs/distributed.md)"
            )
        if getattr(row, "device_map", None):
            raise UserError(
                f"{plan.suite_path}: models[{number}] ({row.name}) sets device_map, which spreads one model "
                "over the GPUs of one process; run it without torchrun, or drop device_map to run one "
                "copy per process"
            )


def _last_uses(units: list[WorkUnit], plan: Plan) -> dict[tuple[Any, ...], int]:
    """Index of the last unit that needs each loaded model (as generator or scorer)."""
    last: dict[tuple[Any, ...], int] = {}
    for position, unit in enumerate(units):
        if unit.kind != "text":
            continue
        last[unit.row.load_key()] = position
        for row in scoring_rows(plan.suite, unit.row):
            last[row.load_key()] = position
    return last


def _open_folder(plan: Plan, output_dir: Path, resume: str | Path | None) -> RunFolder:
    """A new run folder, or the one to resume (which must be a run folder)."""
    if resume is None:
        return RunFolder.create(output_dir, plan.suite.name, plan.config_hash)
    folder = RunFolder(resume)
    folder.read_manifest()  # a user error when it is not a run folder
    return folder


def _start(folder: RunFolder, plan: Plan, resumed: bool) -> None:
    """Record a new run; for a resumed one, check it is a run of this suite with the same --limit."""
    suite = plan.suite
    if not resumed:
        folder.write_manifest(
            Manifest(
                suite=suite.name,
                config_hash=plan.config_hash,
                limit=plan.limit,
                suite_file=str(plan.suite_path),
                started=now_iso(),
            )
        )
        folder.copy_suite(plan.suite_path)
        return
    previous = folder.read_manifest()
    if previous.suite != suite.name:
        raise UserError(f"{folder.path}: is a run of suite {previous.suite!r}, not {suite.name!r}")
    if previous.limit != plan.limit:
        raise UserError(f"{folder.path}: was run with --limit {previous.limit}; resume with the same --limit")
    if previous.config_hash != plan.config_hash:
        # Metric changes are fine (scores are recomputed); the generation logs' own keys
        # catch changes that invalidate finished samples.
        folder.write_manifest(
            previous.model_copy(update={"config_hash": plan.config_hash, "resumed": now_iso()})
        )


@contextmanager
def _saving_progress_on_interrupt(folder: RunFolder, suite_path: Path) -> Iterator[None]:
    """Ctrl-C or a user error mid-run: say where the finished generations are and how to go on."""
    resume = f"aigc-eval run {suite_path} --resume {folder.path}"
    try:
        yield
    except KeyboardInterrupt:
        raise UserError(
            f"interrupted; finished batches are saved in {folder.path}. Continue with: {resume}"
        ) from None
    except UserError as error:
        if not folder.has_generations():
            raise
        raise UserError(
            f"{error}\n(finished generations are saved; after the fix continue with: {resume})"
        ) from None
