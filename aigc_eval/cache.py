"""Content-addressed cache of generations (and log-likelihoods), shared by every run on the machine.

A generation is stored under ``generation_key(identity, settings, prompt, seed)``: the sha256 of
what decides the output (the backend's ``cache_identity()``, the decoding settings, the full prompt
and the sampling seed), so any run asking a model the same question again reuses the answer,
whatever suite, task or run folder it comes from. The log-likelihood of a text (what perplexity is
made of) is stored the same way under ``loglikelihood_key`` (identity, text, context, window,
stride, BOS), as JSON in the same table, labelled ``"... log-likelihood"``, and so are facts a
backend derives from its files (``derived_key``); so a rerun of an unchanged suite needs neither
generation nor scoring and loads no model.

The cache is one SQLite file, ``generations.sqlite3``, in ``$AIGC_EVAL_CACHE_DIR`` when set, else
``$XDG_CACHE_HOME/aigc-eval/generations`` (``~/.cache`` by default). It runs in WAL mode with a
60 s busy timeout and short write transactions (``BEGIN IMMEDIATE``, one per chunk), so several
processes (torchrun ranks, concurrent runs) read and write it at once; a reader never waits for a
writer. ``PRAGMA user_version`` holds the schema version. Times are Unix seconds (UTC) in the file
and timezone-aware UTC datetimes in the API. A cache that cannot be opened or used (read-only
folder, damaged file, a lock held too long) is a ``UserError`` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

from aigc_eval.backends.base import GenerationSettings, TokenLogLikelihood
from aigc_eval.errors import UserError

ENV_VAR = "AIGC_EVAL_CACHE_DIR"
FILE_NAME = "generations.sqlite3"
SCHEMA_VERSION = 1
# Part of every key: bump it when what a cached text means changes, and old entries stop matching.
KEY_VERSION = "aigc-eval-generation-1"
BUSY_TIMEOUT_S = 60.0
# Keys per statement and rows per write transaction: below SQLite's oldest variable limit (999),
# and short enough that another process's write never waits long.
CHUNK = 500

_SCHEMA = """
CREATE TABLE generations (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    tokens INTEGER,
    label TEXT NOT NULL,
    last_used REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX generations_last_used ON generations (last_used);
"""

# One entry for put_many: (key, text, tokens generated or None, label such as "hf:gpt2").
CacheEntry = tuple[str, str, int | None, str]


def default_cache_dir() -> Path:
    """``$AIGC_EVAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/aigc-eval/generations`` (``~/.cache`` by default)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aigc-eval" / "generations"


def generation_key(
    identity: Mapping[str, Any], settings: GenerationSettings, prompt: str, seed: int | None
) -> str:
    """The cache key of one generation: sha256 of canonical JSON (sorted keys, compact, NaN refused)
    of the backend identity, the settings, the full prompt and the seed.

    ``settings.seed`` is left out of the settings: the seed that decides the output is ``seed``,
    which the caller passes as the seed this prompt is sampled with, or ``None`` when the settings
    do not sample (greedy and beam search ignore seeds, so a greedy row with another
    ``generation.seed`` still hits). Every other setting is part of the key.
    """
    document = {
        "version": KEY_VERSION,
        "identity": dict(identity),
        "settings": settings.model_dump(mode="json", exclude={"seed"}),
        "prompt": prompt,
        "seed": seed,
    }
    return _sha256_json(document)


def _sha256_json(document: dict[str, Any]) -> str:
    """sha256 of canonical JSON (sorted keys, compact, NaN refused)."""
    try:
        text = json.dumps(
            document, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except ValueError as error:  # a NaN in a backend's identity: it would never hit again
        raise ValueError(f"cache key: {error} in {document['identity']!r}") from error
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def loglikelihood_key(
    identity: Mapping[str, Any],
    text: str,
    context: str | None,
    max_length: int | None,
    stride: int | None,
    prepend_bos: bool,
    per_token: bool,
) -> str:
    """The cache key of one text's log-likelihood: sha256 of canonical JSON of the backend identity
    and everything ``Scorer.loglikelihood`` is asked with (``per_token`` too: an entry without the
    per-token values cannot answer a request for them)."""
    return _sha256_json(
        {
            "version": KEY_VERSION,
            "kind": "loglikelihood",
            "identity": dict(identity),
            "text": text,
            "context": context,
            "max_length": max_length,
            "stride": stride,
            "prepend_bos": prepend_bos,
            "per_token": per_token,
        }
    )


def derived_key(kind: str, inputs: Mapping[str, Any]) -> str:
    """The cache key of something a backend derives from its files (``kind``, e.g. the HF backend's
    fused-GELU count) and could recompute from ``inputs`` (hashes and library versions)."""
    return _sha256_json({"version": KEY_VERSION, "kind": kind, "identity": dict(inputs)})


def encode_loglikelihood(scored: TokenLogLikelihood) -> str:
    """A log-likelihood as the JSON text stored in the cache (floats as ``repr``: exact round trip)."""
    return json.dumps([scored.nll, scored.tokens, scored.token_nll])


def decode_loglikelihood(text: str) -> TokenLogLikelihood:
    nll, tokens, token_nll = json.loads(text)
    return TokenLogLikelihood(nll, tokens, None if token_nll is None else tuple(token_nll))


@dataclass(frozen=True)
class CachedGeneration:
    """A cached continuation and the tokens generated for it (None when the backend did not say)."""

    text: str
    tokens: int | None


@dataclass(frozen=True)
class CacheStats:
    """What ``aigc-eval cache stats`` shows: size, age range by last use, entries per label."""

    path: Path
    entries: int
    size_bytes: int  # the database file and its WAL and shared-memory files
    oldest_use: datetime | None
    newest_use: datetime | None
    labels: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the path as text, times as ISO 8601 (UTC)."""
        return {
            "path": str(self.path),
            "entries": self.entries,
            "size_bytes": self.size_bytes,
            "oldest_use": self.oldest_use.isoformat() if self.oldest_use else None,
            "newest_use": self.newest_use.isoformat() if self.newest_use else None,
            "labels": self.labels,
        }


class GenerationCache:
    """A connection to the generation cache; one per process (and thread), closed by ``close()``
    or by leaving a ``with`` block."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        """Use ``GenerationCache.open``: it creates the file and checks its schema."""
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, directory: str | Path | None = None) -> GenerationCache:
        """The cache in ``directory`` (default ``default_cache_dir()``), created on first use."""
        folder = Path(directory) if directory is not None else default_cache_dir()
        path = folder / FILE_NAME
        with _guard(path):
            folder.mkdir(parents=True, exist_ok=True)
            return cls(_connect(path), path)

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedGeneration]:
        """The cached generations among ``keys`` (missing keys are absent), marked as used now."""
        found: dict[str, CachedGeneration] = {}
        with _guard(self.path):
            for chunk in _chunks(keys):
                rows = self._db.execute(
                    f"SELECT key, text, tokens FROM generations WHERE key IN ({_marks(chunk)})", chunk
                )
                found.update((key, CachedGeneration(text, tokens)) for key, text, tokens in rows)
            now = time.time()
            for chunk in _chunks(found):
                with _transaction(self._db):
                    self._db.execute(
                        f"UPDATE generations SET last_used = ? WHERE key IN ({_marks(chunk)})", (now, *chunk)
                    )
        return found

    def put_many(self, entries: Iterable[CacheEntry]) -> int:
        """Store generations (a key already there is overwritten); returns how many were written."""
        written = 0
        with _guard(self.path):
            for chunk in _chunks(entries):
                now = time.time()
                with _transaction(self._db):
                    self._db.executemany(
                        "INSERT INTO generations (key, text, tokens, label, last_used) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET text = excluded.text, "
                        "tokens = excluded.tokens, label = excluded.label, last_used = excluded.last_used",
                        [(key, text, tokens, label, now) for key, text, tokens, label in chunk],
                    )
                written += len(chunk)
        return written

    def stats(self) -> CacheStats:
        """Entries, bytes on disk, the range of last-use times and entries per label."""
        with _guard(self.path):
            entries, oldest, newest = self._db.execute(
                "SELECT COUNT(*), MIN(last_used), MAX(last_used) FROM generations"
            ).fetchone()
            labels = dict(
                self._db.execute("SELECT label, COUNT(*) FROM generations GROUP BY label ORDER BY label")
            )
        files = (self.path, self.path.with_name(f"{FILE_NAME}-wal"), self.path.with_name(f"{FILE_NAME}-shm"))
        size = sum(part.stat().st_size for part in files if part.exists())
        return CacheStats(self.path, entries, size, _utc(oldest), _utc(newest), labels)

    def clear(self) -> int:
        """Remove every entry and shrink the file; returns how many were removed."""
        with _guard(self.path):
            with _transaction(self._db):
                removed = self._db.execute("DELETE FROM generations").rowcount
            self._shrink()
        return removed

    def prune(self, older_than: timedelta) -> int:
        """Remove entries last used more than ``older_than`` ago and shrink the file; returns how many."""
        if older_than < timedelta(0):
            raise UserError(f"prune: older_than {older_than} is negative; give an age of 0 or more")
        cutoff = time.time() - older_than.total_seconds()
        with _guard(self.path):
            with _transaction(self._db):
                removed = self._db.execute("DELETE FROM generations WHERE last_used < ?", (cutoff,)).rowcount
            if removed:
                self._shrink()
        return removed

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> GenerationCache:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _shrink(self) -> None:
        """VACUUM rewrites the file without its free pages; the checkpoint copies that into the main
        file and truncates the WAL (it does less, harmlessly, while another process reads)."""
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _connect(path: Path) -> sqlite3.Connection:
    """Open in autocommit mode (every write takes its own short transaction), WAL, schema checked."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        _enable_wal(connection)
        # Safe in WAL mode (a power cut loses the last commits only) and faster than FULL.
        connection.execute("PRAGMA synchronous=NORMAL")
        if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            _create_schema(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


def _enable_wal(connection: sqlite3.Connection) -> None:
    """Switch to WAL mode (it stays so in the file). While another process switches the same new
    file, SQLite answers "database is locked" at once, bypassing the busy timeout: retry until it."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "database is locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _create_schema(connection: sqlite3.Connection, path: Path) -> None:
    """Create the tables in a new file, once even when several processes open it at once."""
    with _transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UserError(
                f"{path}: generation cache schema {version} is newer than this aigc-eval's "
                f"({SCHEMA_VERSION}); upgrade aigc-eval, set {ENV_VAR} to another folder, "
                "or run with --no-cache"
            )
        if version == 0:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One short write transaction, taking the write lock at once (no deadlocked lock upgrades)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if connection.in_transaction:  # SQLite has already rolled back after some errors (disk full)
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


@contextmanager
def _guard(path: Path) -> Iterator[None]:
    """Failures the user can fix (no such folder, read-only, disk full, damaged file, a lock held
    past the timeout) as one UserError; other SQLite errors (ProgrammingError, ...) are bugs."""
    try:
        yield
    except (OSError, sqlite3.DatabaseError) as error:
        if isinstance(error, sqlite3.DatabaseError) and type(error) not in _USER_FIXABLE:
            raise
        raise UserError(
            f"{path}: cannot use the generation cache ({error}); make its folder writable or delete a "
            f"damaged file, set {ENV_VAR} to another folder, or run with --no-cache"
        ) from None


# OperationalError: cannot open, read-only, locked, disk full; plain DatabaseError: not a database.
_USER_FIXABLE = (sqlite3.OperationalError, sqlite3.DatabaseError)


def _marks(chunk: list[str]) -> str:
    return ",".join("?" * len(chunk))


def _chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


def _utc(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None
