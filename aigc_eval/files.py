"""File utilities used everywhere, once: atomic writes, strict JSON, JSONL reading, hashing, devices.

Nothing here knows what a run folder is (``run_folder`` does); these are the primitives it and the
feature cache, the backends and the image loaders share.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from aigc_eval.errors import UserError

if TYPE_CHECKING:
    import torch


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


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(folder, error) from None


def write_atomic(path: Path, text: str) -> None:
    """Write text via a temp file + rename so a crash never leaves a half-written file."""
    write_atomic_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` via a temp file + rename (feature files, the feature cache, ``aigc-eval stats``)."""
    write_atomic_bytes(path, lambda handle: np.savez(handle, **arrays))


def write_atomic_bytes(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(handle)`` into ``.<name>.<8 hex>.tmp`` next to ``path``, fsync, then rename over ``path``.

    ``remove_stale_temp_files`` (run_folder) finds the temp files a kill left behind; the result gets
    a normal file's permissions (0666 less the umask, as a plain open() gives; mkstemp would give 0600).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a file; give the path of a file to write")
    make_folder(path.parent)
    try:
        while True:
            tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise write_error(path, error) from None


def dumps_strict(value: Any, **options: Any) -> str:
    """Strict JSON: a NaN or infinity here is a bug upstream (``Score.to_dict`` and
    ``finite_or_none`` turn undefined values into null), so it fails instead of writing ``NaN``."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_jsonable, **options)


def write_json(path: Path, value: Any) -> None:
    try:
        text = dumps_strict(value, indent=2)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    write_atomic(path, text + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    try:
        text = "".join(dumps_strict(r) + "\n" for r in rows)
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


def sha256_files(paths: Iterable[Path]) -> str:
    """One sha256 over the bytes of several files, in the given order (weights, image files)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device a ``device:`` setting names: ``auto`` is the first CUDA GPU, else Apple's MPS,
    else the CPU; a device that is not there is a user error naming the setting's choices."""
    import torch

    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise UserError(
            f"device {device!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r}: no CUDA GPU is available here; use device auto or cpu")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r}: MPS is not available here; use device auto or cpu")
    return chosen
