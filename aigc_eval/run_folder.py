"""The run folder, the unit of record: ``RunFolder`` owns every file name in it and every read and write.

Everything a later command needs (resume, tables, compare, report) is read back from here, never
from the memory of a run. Writes are atomic (temp file + rename) and strict JSON; the run lock keeps
a second process out; generation logs are append-only with torn tails dropped. The files' schema is
``aigc_eval.record``; old schema versions are migrated on read.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from aigc_eval.errors import UserError
from aigc_eval.files import (
    dumps_strict,
    make_folder,
    read_json_object,
    read_jsonl,
    write_atomic,
    write_error,
    write_json,
    write_jsonl,
    write_npz_atomic,
)
from aigc_eval.record import (
    SCHEMA_VERSION,
    Environment,
    Manifest,
    RunRecord,
    SampleRecord,
    StatsRecord,
    migrate,
)

_PACKAGES = (
    "aigc-eval",
    "torch",
    "transformers",
    "tokenizers",
    "sacrebleu",
    "rouge-score",
    "rouge-score-rs",
    "numpy",
    "scipy",
    "pandas",
    "pydantic",
    "evaluate",
)
_DAMAGED = "the file is damaged; run the suite again into a new run folder"


class RunFolder:
    """One run folder: its file names, and every read and write of them.

    Reads are cached per instance (a ``run --baseline`` reads each file once); writes update the cache.
    """

    RESULTS = "results.json"
    SAMPLES = "samples.jsonl"
    STATS = "stats.jsonl"  # per-sample sufficient statistics: what intervals and paired tests resample
    MANIFEST = "run.json"
    SUITE_COPY = "suite.yaml"
    GENERATIONS = "generations"
    FEATURES = "features"
    ERROR_LOG = "internal-error.log"
    LOCK = LOCK_FILE = ".lock"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._record: RunRecord | None = None
        self._samples: list[SampleRecord] | None = None
        self._stats: list[StatsRecord] | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, output_dir: str | Path, suite_name: str, config_hash: str) -> RunFolder:
        """A fresh ``output_dir/suite/<UTC stamp>-<hash>[-N]`` folder (never one another process made)."""
        return cls(_new_run_dir(Path(output_dir), suite_name, config_hash))

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder (or its results.json); a user error when ``path`` is not one."""
        path = Path(path)
        if path.is_file() and path.name == cls.RESULTS:
            path = path.parent
        folder = cls(path)
        if not (folder.file(cls.RESULTS).is_file() or folder.file(cls.MANIFEST).is_file()):
            raise UserError(
                f"{path}: not a run folder (no {cls.RESULTS} or {cls.MANIFEST}); "
                "pass a folder written by 'aigc-eval run'"
            )
        return folder

    def file(self, *parts: str) -> Path:
        """A path inside the folder; parts built from suite names cannot lead outside it."""
        return run_file(self.path, *parts)

    def lock(self) -> RunDirLock:
        """``with folder.lock(): ...`` holds the folder for this process (see ``RunDirLock``)."""
        return RunDirLock(self.path)

    # --- manifest and suite copy -----------------------------------------------------------------

    def read_manifest(self) -> Manifest:
        file = self.file(self.MANIFEST)
        if not file.is_file():
            raise UserError(
                f"{self.path}: not a run folder (no {self.MANIFEST}); pass a folder made by 'aigc-eval run'"
            )
        return _validated(Manifest, read_json_object(file, "run manifest"), file)

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.file(self.MANIFEST), manifest.model_dump(mode="json", exclude_none=True))

    def copy_suite(self, source: Path) -> None:
        shutil.copyfile(source, self.file(self.SUITE_COPY))

    # --- the record ------------------------------------------------------------------------------

    def has_record(self) -> bool:
        return self.file(self.RESULTS).is_file()

    def read_record(self) -> RunRecord:
        """results.json, migrated from older schema versions and validated."""
        if self._record is None:
            file = self.file(self.RESULTS)
            if not file.is_file():
                raise UserError(f"{file}: no results.json here; pass a run folder written by 'aigc-eval run'")
            data = read_json_object(file, "results file")
            version = data.get("schema_version")
            if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
                raise UserError(
                    f"{file}: schema_version {version!r} is not one this version reads "
                    f"(1 to {SCHEMA_VERSION}); upgrade aigc-eval or re-run the suite"
                )
            self._record = _validated(RunRecord, migrate(data), file)
        return self._record

    def hold_record(self, record: RunRecord) -> None:
        """Let readers of this instance see ``record`` before it is written (finalize's in-memory
        comparison of the run's rows runs before results.json exists)."""
        self._record = record

    def write_record(self, record: RunRecord) -> None:
        write_json(self.file(self.RESULTS), record.model_dump(mode="json"))
        self._record = record

    # --- per-sample files ------------------------------------------------------------------------

    def read_samples(self) -> list[SampleRecord]:
        if self._samples is None:
            self._samples = self._read_lines(self.SAMPLES, SampleRecord)
        return self._samples

    def write_samples(self, samples: Iterable[SampleRecord]) -> None:
        self._samples = list(samples)
        write_jsonl(self.file(self.SAMPLES), (s.model_dump(mode="json") for s in self._samples))

    def read_stats(self) -> list[StatsRecord]:
        if self._stats is None:
            self._stats = self._read_lines(self.STATS, StatsRecord)
        return self._stats

    def write_stats(self, stats: Iterable[StatsRecord]) -> None:
        self._stats = list(stats)
        write_jsonl(self.file(self.STATS), (s.model_dump(mode="json") for s in self._stats))

    def _read_lines(self, name: str, model: type[Any]) -> list[Any]:
        file = self.file(name)
        if not file.is_file():
            raise UserError(
                f"{file}: missing; this needs the per-sample files that 'aigc-eval run' writes next to "
                f"{self.RESULTS} (re-run the suite with this version)"
            )
        return [_validated(model, row, file) for row in read_jsonl(file)]

    # --- generations -----------------------------------------------------------------------------

    def generation_log(self, row: str, task: str, key: str, shard: str = "") -> GenerationLog:
        """The append-only log of one work unit (row × task, optionally one shard of its examples)."""
        name = f"{row}__{task}" + (f"__{shard}" if shard else "") + ".jsonl"
        return GenerationLog(self.file(self.GENERATIONS, name), key)

    def finished_generations(self, row: str, task: str, key: str) -> dict[int, str]:
        """Finished predictions of a row × task by example index, merged from every log it has: the
        unsharded one and each shard's, whatever the process count of the attempts that wrote them
        (so a run resumes with a different number of processes). Every log must carry ``key``."""
        folder = self.file(self.GENERATIONS)
        names = [
            f"{row}__{task}.jsonl",
            *sorted(p.name for p in folder.glob(f"{row}__{task}__shard*of*.jsonl")),
        ]
        done: dict[int, str] = {}
        for name in names:
            for index, text in GenerationLog(folder / name, key).load().items():
                done.setdefault(index, text)  # duplicates come from reruns of one example: keep the first
        return done

    def has_generations(self) -> bool:
        return any(self.file(self.GENERATIONS).glob("*.jsonl"))

    # --- image features --------------------------------------------------------------------------

    def features_name(self, row: str, task: str) -> str:
        """The generated images' features of a row × task, relative to the folder (results.json keeps it)."""
        run_file(self.path, row, task)  # both must be plain names
        return f"{self.FEATURES}/{row}__{task}.npz"

    def reference_features_name(self, task: str) -> str:
        run_file(self.path, task)
        return f"{self.FEATURES}/{task}__reference.npz"

    def save_arrays(self, relative: str, arrays: dict[str, np.ndarray]) -> None:
        write_npz_atomic(self._inside(relative), arrays)

    def load_arrays(self, relative: str) -> dict[str, np.ndarray]:
        """The arrays of a feature file written by ``save_arrays``; a user error when it is damaged."""
        path = self._inside(relative)
        try:
            with np.load(path) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, KeyError, EOFError) as error:
            raise UserError(f"{path}: not a readable feature file ({error}); re-run the suite") from None

    def _inside(self, relative: str) -> Path:
        return self.file(*Path(relative).parts)

    # --- outputs (tables, report) and the internal error log ------------------------------------

    def write_output(self, name: str, text: str) -> Path:
        """A writer's output file (``table.md``, ``report.html``...), written atomically."""
        path = self.file(name)
        write_atomic(path, text)
        return path

    def output_path(self, name: str) -> Path:
        return self.file(name)

    @property
    def error_log(self) -> Path:
        return self.file(self.ERROR_LOG)


def _validated(model: type[Any], data: Any, file: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(
            f"{file}: not a valid {model.__name__} ({where}: {first['msg']}); {_DAMAGED}"
        ) from None


def run_file(run_dir: Path, *parts: str) -> Path:
    """``run_dir / part / ...``, refusing any part that could lead outside the run folder.

    Parts come from suite names (model rows, tasks): each must be one plain path component (no
    separator, not "." or ".."), so the path stays inside ``run_dir`` however the names read.
    """
    for part in parts:
        bad = not part or part in (".", "..") or any(c in part for c in "/\\\0")
        if bad:
            raise UserError(
                f"{part!r}: cannot be used in a file name in the run folder {run_dir}; "
                "use letters, digits, '-', '_' or '.' in model row and task names"
            )
    return run_dir.joinpath(*parts)  # plain components only: it cannot resolve outside run_dir


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _new_run_dir(output_dir: Path, suite_name: str, config_hash: str) -> Path:
    """A fresh ``output_dir/suite/<UTC stamp>-<hash>[-N]`` folder (never one another process made)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    parent = run_file(output_dir, suite_name)
    make_folder(parent)
    suffix = 1
    while True:
        run_dir = parent / (f"{stamp}-{config_hash[:8]}" + (f"-{suffix}" if suffix > 1 else ""))
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            suffix += 1
        except OSError as error:
            raise write_error(run_dir, error) from None


# write_atomic's temp names: "." + the file's name + "." + 8 hex (or mkstemp's 8 characters) + ".tmp".
_TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temp files of writes a kill interrupted; call only while holding the run lock."""
    removed = []
    for path in run_dir.rglob(".*.tmp"):
        if path.is_file() and _TEMP_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class RunDirLock:
    """An exclusive, non-blocking ``flock`` on ``run_dir/.lock`` (holding the owner's pid).

    Two processes writing one run folder (``--resume`` twice) would interleave generation logs
    and overwrite each other's results; the second one stops with a user error instead. The
    kernel drops the lock when its process dies, so a killed run never leaves it stuck.
    Entering also removes the temp files a killed run left behind.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        path = self.run_dir / RunFolder.LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise write_error(path, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"run folder {self.run_dir} is in use by process {owner}; wait for it to finish "
                f"(or stop it), then run again, or start a new run without --resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        remove_stale_temp_files(self.run_dir)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class GenerationLog:
    """Append-only JSONL of finished generations for one model row × task.

    The first line records the key (hash of everything that determines the
    generations); each later line is one sample, flushed and fsynced per batch so a
    kill loses at most the batch in flight. A kill can only tear the bytes after the
    last newline: on reload those are dropped (their samples are generated again) and
    the next append cuts them off, so they are never sealed into the log. An empty log
    or one whose header line is torn counts as empty and is rewritten.
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self._valid_bytes: int | None = None  # length of the intact prefix, known after load()

    def load(self) -> dict[int, str]:
        """Finished predictions by example index; empty when the log does not exist yet."""
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
        except OSError as error:
            raise UserError(f"{self.path}: cannot read ({error.strerror or error})") from None
        end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        lines = data[:end].split(b"\n")[:-1]
        self._valid_bytes = end
        if not lines:
            self._valid_bytes = 0
            return {}
        header = self._parse(lines[0], 1)
        if header.get("key") != self.key:
            if "key" not in header:
                raise self._corrupt(1, "the first line has no generation key")
            raise UserError(
                f"{self.path}: was generated by a different suite configuration "
                f"(model settings, prompts or data changed); start a new run instead of --resume"
            )
        done: dict[int, str] = {}
        for number, line in enumerate(lines[1:], 2):
            row = self._parse(line, number)
            index, prediction = row.get("index"), row.get("prediction")
            if not isinstance(index, int) or isinstance(index, bool) or not isinstance(prediction, str):
                raise self._corrupt(number, "a sample needs an integer 'index' and a string 'prediction'")
            done[index] = prediction
        return done

    def _parse(self, line: bytes, number: int) -> dict[str, Any]:
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self._corrupt(number, str(error)) from None
        if not isinstance(row, dict):
            raise self._corrupt(number, "not a JSON object")
        return row

    def _corrupt(self, number: int, reason: str) -> UserError:
        return UserError(
            f"{self.path}:{number}: corrupt generation log ({reason}); delete this file to generate "
            "its samples again, or start a new run instead of --resume"
        )

    def append(self, rows: list[dict[str, Any]]) -> None:
        if self._valid_bytes is None:
            self.load()
        assert self._valid_bytes is not None
        make_folder(self.path.parent)
        payload = "".join(dumps_strict(row) + "\n" for row in rows)
        if self._valid_bytes == 0:
            payload = json.dumps({"key": self.key}) + "\n" + payload
        try:
            with self.path.open("ab") as handle:
                if os.fstat(handle.fileno()).st_size != self._valid_bytes:
                    handle.truncate(self._valid_bytes)  # drop a torn tail (or an empty/torn header)
                handle.write(payload.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
                self._valid_bytes = os.fstat(handle.fileno()).st_size
        except OSError as error:
            raise write_error(self.path, error) from None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> Environment:
    """Versions and machine facts that a result depends on."""
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return Environment(
        python=sys.version.split()[0],
        platform=platform.platform(),
        packages=packages,
        git_commit=_git_commit(),
    )
