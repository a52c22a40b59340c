"""The run folder, the unit of record: atomic result files, append-only generations, provenance.

Everything a later command needs (resume, tables, compare, report) is read back
from here, never from memory of the run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import platform
import re
import secrets
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from aigc_eval.errors import UserError

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
STATS_FILE = "stats.jsonl"  # per-sample sufficient statistics: what intervals and paired tests resample
MANIFEST_FILE = "run.json"
GENERATIONS_DIR = "generations"

_PACKAGES = (
    "aigc-eval",
    "torch",
    "transformers",
    "tokenizers",
    "sacrebleu",
    "rouge-score",
    "numpy",
    "scipy",
    "pandas",
    "pydantic",
    "evaluate",
)


def write_error(path: Path, error: OSError) -> UserError:
    """A file system refusal (a file where a folder should be, no permission, read-only, disk
    full) as a one-line user error naming the path and the fix."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return UserError(
                f"{path}: cannot write here: {blocker} is a file, not a folder; choose a path under a folder"
            )
    fixes = {
        errno.EISDIR: "it is a folder; give a file name",
        errno.EACCES: "no permission; choose a folder you can write to",
        errno.EPERM: "not permitted; choose a folder you can write to",
        errno.EROFS: "the file system is read-only; choose a writable folder",
        errno.ENOSPC: "the disk is full; free space or choose another disk",
        errno.EDQUOT: "the disk quota is exceeded; free space or choose another disk",
    }
    fix = fixes.get(error.errno or -1, "choose a folder you can write to")
    return UserError(f"{path}: cannot write here ({reason}); {fix}")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(folder, error) from None


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file.

    The temp file is ``.<name>.<8 hex>.tmp`` next to ``path`` (``remove_stale_temp_files``
    finds those a kill left behind); the result gets a normal file's permissions.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a file; give the path of a file to write")
    _make_folder(path.parent)
    try:
        while True:
            tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
            try:
                # 0666 less the umask, as a plain open() gives (mkstemp would give 0600).
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise write_error(path, error) from None


def _dumps(value: Any, **options: Any) -> str:
    """Strict JSON: a NaN or infinity here is a bug upstream (``Score.to_dict`` and
    ``finite_or_none`` turn undefined values into null), so it fails instead of writing ``NaN``."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_jsonable, **options)


def write_json(path: Path, value: Any) -> None:
    try:
        text = _dumps(value, indent=2)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    write_atomic(path, text + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    try:
        text = "".join(_dumps(r) + "\n" for r in rows)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    write_atomic(path, text)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinity (nested in dicts and lists too) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSONL file, one per line.

    Lines end at "\n" only: a JSON string may hold U+2028, U+2029 or U+0085 unescaped (we write
    with ``ensure_ascii=False``), which ``str.splitlines()`` would wrongly split on.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error}); regenerate it with 'aigc-eval run'") from None
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{path}:{number}: not valid JSON ({error}); regenerate it with 'aigc-eval run'"
            ) from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: not a JSON object; regenerate it with 'aigc-eval run'")
        rows.append(row)
    return rows


def read_json_object(file: Path, what: str) -> dict[str, Any]:
    """A JSON file that 'aigc-eval run' wrote and that must hold one object (results.json,
    run.json); anything else is a damaged run folder: a user error naming ``what`` and the fix."""
    fix = "the file is damaged; run the suite again into a new run folder"
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except OSError as error:
        raise UserError(f"{file}: cannot read ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{file}: not a valid {what} ({error}); {fix}") from None
    if not isinstance(data, dict):
        kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
            type(data), "null"
        )
        raise UserError(f"{file}: not a valid {what} (a JSON {kind}, not an object); {fix}")
    return data


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


def new_run_dir(output_dir: Path, suite_name: str, config_hash: str) -> Path:
    """A fresh ``output_dir/suite/<UTC stamp>-<hash>[-N]`` folder (never one another process made)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    parent = run_file(output_dir, suite_name)
    _make_folder(parent)
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


LOCK_FILE = ".lock"


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
        path = self.run_dir / LOCK_FILE
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


def lock_run_dir(run_dir: Path) -> RunDirLock:
    """``with lock_run_dir(run_dir): ...`` holds the run folder for this process (see RunDirLock)."""
    return RunDirLock(run_dir)


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
        _make_folder(self.path.parent)
        payload = "".join(_dumps(row) + "\n" for row in rows)
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


def environment() -> dict[str, Any]:
    """Versions and machine facts that a result depends on."""
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "git_commit": _git_commit(),
    }


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a run folder's results.json (or the file itself)."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file}: no results.json here; pass a run folder written by 'aigc-eval run'")
    data = read_json_object(file, "results file")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{file}: schema_version {data.get('schema_version')} is not {SCHEMA_VERSION}")
    return data
