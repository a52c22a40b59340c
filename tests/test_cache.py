"""The generation cache on real SQLite files: round trips, what the key depends on, two processes
writing at once, pruning by last use, clearing, stats, and caches that cannot be used."""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aigc_eval import cache as cache_module
from aigc_eval.backends.base import GenerationSettings, TokenLogLikelihood
from aigc_eval.cache import (
    CHUNK,
    FILE_NAME,
    CachedGeneration,
    GenerationCache,
    decode_loglikelihood,
    encode_loglikelihood,
    generation_key,
    loglikelihood_key,
)
from aigc_eval.errors import UserError

IDENTITY = {"backend": "hf", "model": "demo-gpt2", "weights_sha256": "ab" * 32, "dtype": "float32"}
GREEDY = GenerationSettings(max_new_tokens=12)


def _set_last_use(directory: Path, times: dict[str, float]) -> None:
    """Set entries' last-use times (Unix seconds) directly, as if they were used back then."""
    with closing(sqlite3.connect(directory / FILE_NAME)) as db, db:
        rows = [(seconds, key) for key, seconds in times.items()]
        db.executemany("UPDATE generations SET last_used = ? WHERE key = ?", rows)


def _age(directory: Path, ages: dict[str, float]) -> None:
    """Entries last used ``seconds`` ago."""
    now = time.time()
    _set_last_use(directory, {key: now - seconds for key, seconds in ages.items()})


def test_round_trip_survives_reopening_and_overwrites(tmp_path: Path) -> None:
    entries = [
        ("k1", "今天天气很好。", 7, "hf:demo"),
        ("k2", "", None, "hf:demo"),
        ("k3", "a\nb", 2, "openai:x"),
    ]
    with GenerationCache.open(tmp_path / "new" / "folder") as cache:
        assert cache.put_many(entries) == 3
        assert cache.get_many(["k1", "missing", "k2"]) == {
            "k1": CachedGeneration("今天天气很好。", 7),
            "k2": CachedGeneration("", None),
        }
    with GenerationCache.open(tmp_path / "new" / "folder") as cache:
        assert cache.get_many(["k3"]) == {"k3": CachedGeneration("a\nb", 2)}
        cache.put_many([("k3", "c", 1, "openai:y")])
        assert cache.get_many(["k3"]) == {"k3": CachedGeneration("c", 1)}
        assert cache.stats().labels == {"hf:demo": 2, "openai:y": 1}
    with closing(sqlite3.connect(tmp_path / "new" / "folder" / FILE_NAME)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == cache_module.SCHEMA_VERSION


def test_many_keys_cross_chunks(tmp_path: Path) -> None:
    n = 2 * CHUNK + 7
    with GenerationCache.open(tmp_path) as cache:
        assert cache.put_many((f"k{i}", f"text {i}", i, "m") for i in range(n)) == n
        found = cache.get_many([f"k{i}" for i in range(n + 5)])
    assert len(found) == n
    assert found[f"k{n - 1}"] == CachedGeneration(f"text {n - 1}", n - 1)


def test_default_folder_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGC_EVAL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with GenerationCache.open() as cache:
        assert cache.path == tmp_path / "xdg" / "aigc-eval" / "generations" / FILE_NAME
    monkeypatch.setenv("AIGC_EVAL_CACHE_DIR", str(tmp_path / "chosen"))
    with GenerationCache.open() as cache:
        assert cache.path == tmp_path / "chosen" / FILE_NAME
    assert (tmp_path / "chosen" / FILE_NAME).is_file()


def test_key_is_sha256_of_canonical_json() -> None:
    """Pinned format: changing it silently would make every existing cache miss."""
    settings = GenerationSettings(max_new_tokens=8, stop=("\n",))
    canonical = (
        '{"identity":{"a":1,"b":"é"},"prompt":"Q: 2+2?\\n","seed":null,'
        '"settings":{"do_sample":false,"early_stopping":false,"max_new_tokens":8,"num_beams":1,'
        '"repetition_penalty":1.0,"stop":["\\n"],"temperature":1.0,"top_k":50,"top_p":1.0},'
        '"version":"aigc-eval-generation-1"}'
    )
    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert generation_key({"b": "é", "a": 1}, settings, "Q: 2+2?\n", None) == expected
    assert generation_key({"a": 1, "b": "é"}, settings, "Q: 2+2?\n", None) == expected


# A changed value for every decoding setting; the seed goes through generation_key's own argument.
CHANGED_SETTINGS: dict[str, Any] = {
    "max_new_tokens": 13,
    "num_beams": 2,
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 0,
    "repetition_penalty": 1.1,
    "early_stopping": True,
    "stop": ("\n\n",),
}


def test_every_setting_is_covered() -> None:
    assert set(CHANGED_SETTINGS) == set(GenerationSettings.model_fields) - {"seed"}


@pytest.mark.parametrize("field", sorted(CHANGED_SETTINGS))
def test_key_changes_with_each_setting(field: str) -> None:
    changed = GREEDY.model_copy(update={field: CHANGED_SETTINGS[field]})
    assert generation_key(IDENTITY, changed, "p", None) != generation_key(IDENTITY, GREEDY, "p", None)


@pytest.mark.parametrize(
    "identity",
    [
        {**IDENTITY, "weights_sha256": "cd" * 32},
        {**IDENTITY, "dtype": "bfloat16"},
        {**IDENTITY, "revision": "main"},
        {k: v for k, v in IDENTITY.items() if k != "dtype"},
    ],
)
def test_key_changes_with_identity(identity: dict[str, Any]) -> None:
    assert generation_key(identity, GREEDY, "p", None) != generation_key(IDENTITY, GREEDY, "p", None)


def test_key_changes_with_prompt_and_seed_only_when_given() -> None:
    base = generation_key(IDENTITY, GREEDY, "Translate: cat", None)
    assert generation_key(IDENTITY, GREEDY, "Translate: cat ", None) != base
    assert generation_key(IDENTITY, GREEDY, "Translate: dog", None) != base
    # Greedy: the caller passes seed=None, and the row's generation.seed does not matter.
    assert generation_key(IDENTITY, GREEDY.model_copy(update={"seed": 99}), "Translate: cat", None) == base
    sampled = GREEDY.model_copy(update={"do_sample": True})
    keys = {generation_key(IDENTITY, sampled, "Translate: cat", seed) for seed in (None, 0, 1, 2**40)}
    assert len(keys) == 4


def test_key_refuses_nan() -> None:
    with pytest.raises(ValueError, match="cache key"):
        generation_key({**IDENTITY, "scale": float("nan")}, GREEDY, "p", None)


LOGLIKELIHOOD_REQUEST: dict[str, Any] = {
    "text": " the cat sat",
    "context": "Once",
    "max_length": 64,
    "stride": 32,
    "prepend_bos": True,
    "per_token": False,
}
CHANGED_REQUEST: dict[str, Any] = {
    "text": " the cat sat.",
    "context": None,
    "max_length": None,
    "stride": 16,
    "prepend_bos": False,
    "per_token": True,
}


@pytest.mark.parametrize("field", sorted(CHANGED_REQUEST))
def test_loglikelihood_key_changes_with_each_part_of_the_request(field: str) -> None:
    base = loglikelihood_key(IDENTITY, **LOGLIKELIHOOD_REQUEST)
    assert loglikelihood_key(IDENTITY, **{**LOGLIKELIHOOD_REQUEST, field: CHANGED_REQUEST[field]}) != base
    assert loglikelihood_key({**IDENTITY, "dtype": "bfloat16"}, **LOGLIKELIHOOD_REQUEST) != base
    # A generation of the same text is another entry, never this one.
    assert generation_key(IDENTITY, GREEDY, LOGLIKELIHOOD_REQUEST["text"], None) != base


@pytest.mark.parametrize(
    "scored",
    [
        TokenLogLikelihood(0.0, 0),
        TokenLogLikelihood(12.345678901234567, 7),
        TokenLogLikelihood(math.fsum([0.1] * 3), 3, (0.1, 1e-300, 2.2250738585072014e-308)),
        TokenLogLikelihood(5e-324, 1, (5e-324,)),
    ],
)
def test_a_stored_loglikelihood_comes_back_bit_for_bit(tmp_path: Path, scored: TokenLogLikelihood) -> None:
    with GenerationCache.open(tmp_path) as cache:
        cache.put_many([("k", encode_loglikelihood(scored), scored.tokens, "hf:m log-likelihood")])
    with GenerationCache.open(tmp_path) as cache:
        back = decode_loglikelihood(cache.get_many(["k"])["k"].text)
    assert back == scored
    assert [x.hex() for x in back.token_nll or ()] == [x.hex() for x in scored.token_nll or ()]


def _hammer(directory: str, worker: int, rounds: int, barrier: Any, results: Any) -> None:
    """One process: puts and gets interleaved with the other's; reports what it could not read back."""
    try:
        barrier.wait()
        lost = 0
        with GenerationCache.open(directory) as cache:
            for i in range(rounds):
                cache.put_many([(f"w{worker}-{i}", f"text {worker} {i}", i, f"worker{worker}")])
                if i % 10 == 0:  # both processes write the same keys too
                    cache.put_many([(f"shared-{i}", f"shared {i}", None, "shared")])
                mine = [f"w{worker}-{j}" for j in range(max(0, i - 4), i + 1)]
                theirs = [f"w{1 - worker}-{j}" for j in range(i + 1)]
                found = cache.get_many(mine + theirs)
                lost += sum(key not in found for key in mine)
        results.put((worker, lost, None))
    except BaseException as error:  # reported to the test instead of dying silently
        results.put((worker, -1, repr(error)))


def test_two_processes_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    rounds = 300
    directory = tmp_path / "shared-cache"  # created by the two processes at once
    processes = [
        context.Process(target=_hammer, args=(str(directory), w, rounds, barrier, results)) for w in (0, 1)
    ]
    for process in processes:
        process.start()
    reports = sorted(results.get(timeout=240) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert reports == [(0, 0, None), (1, 0, None)]
    assert [p.exitcode for p in processes] == [0, 0]
    with GenerationCache.open(directory) as cache:
        keys = [f"w{w}-{i}" for w in (0, 1) for i in range(rounds)]
        found = cache.get_many(keys)
        assert len(found) == 2 * rounds
        assert found["w1-299"] == CachedGeneration("text 1 299", 299)
        assert cache.stats().labels == {"shared": rounds // 10, "worker0": rounds, "worker1": rounds}


def test_prune_by_last_use(tmp_path: Path) -> None:
    day = 86400.0
    with GenerationCache.open(tmp_path) as cache:
        cache.put_many((key, key, 1, "m") for key in ("old", "month", "week", "new"))
        _age(tmp_path, {"old": 40 * day, "month": 29 * day, "week": 6 * day})
        assert cache.prune(timedelta(days=30)) == 1
        assert set(cache.get_many(["old", "month", "week", "new"])) == {"month", "week", "new"}
        # get_many marked those three as used just now: nothing is older than a day any more.
        assert cache.prune(timedelta(days=1)) == 0
        _age(tmp_path, {"month": 29 * day, "week": 6 * day})
        assert cache.prune(timedelta(weeks=1)) == 1
        assert cache.prune(timedelta(0)) == 2
        assert cache.stats().entries == 0
        with pytest.raises(UserError, match="negative"):
            cache.prune(timedelta(days=-1))


def test_clear_removes_everything_and_shrinks_the_file(tmp_path: Path) -> None:
    with GenerationCache.open(tmp_path) as cache:
        cache.put_many((f"k{i}", "x" * 1000, None, "m") for i in range(3000))
        full = cache.stats().size_bytes
        assert full > 3_000_000
        assert cache.clear() == 3000
        emptied = cache.stats()
        assert cache.get_many(["k0"]) == {}
    assert emptied.entries == 0
    assert emptied.size_bytes < 100_000
    assert (tmp_path / FILE_NAME).stat().st_size < 100_000


def test_stats_counts_labels_and_last_use(tmp_path: Path) -> None:
    with GenerationCache.open(tmp_path) as cache:
        empty = cache.stats()
        assert (empty.entries, empty.oldest_use, empty.newest_use, empty.labels) == (0, None, None, {})
        cache.put_many([("a", "1", 1, "hf:demo"), ("b", "2", 1, "hf:demo"), ("c", "3", 1, "vllm:demo")])
        _set_last_use(tmp_path, {"a": 1_700_000_000.0, "b": 1_700_000_000.0, "c": 1_750_000_000.5})
        stats = cache.stats()
    assert stats.path == tmp_path / FILE_NAME
    assert stats.entries == 3
    assert stats.labels == {"hf:demo": 2, "vllm:demo": 1}
    assert stats.oldest_use == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert stats.newest_use == datetime(2025, 6, 15, 15, 6, 40, 500000, tzinfo=timezone.utc)
    assert stats.size_bytes >= (tmp_path / FILE_NAME).stat().st_size > 0
    assert stats.to_dict()["oldest_use"] == "2023-11-14T22:13:20+00:00"


def _folder_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "cache").write_text("not a folder")
    return tmp_path / "cache"


def _database_is_a_folder(tmp_path: Path) -> Path:
    (tmp_path / "cache" / FILE_NAME).mkdir(parents=True)
    return tmp_path / "cache"


def _damaged_file(tmp_path: Path) -> Path:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / FILE_NAME).write_bytes(b"this is not an SQLite database" * 100)
    return tmp_path / "cache"


def _newer_schema(tmp_path: Path) -> Path:
    (tmp_path / "cache").mkdir()
    with closing(sqlite3.connect(tmp_path / "cache" / FILE_NAME)) as db:
        db.execute("PRAGMA user_version = 99")
    return tmp_path / "cache"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_folder_is_a_file, "File exists"),
        (_database_is_a_folder, "unable to open database file"),
        (_damaged_file, "file is not a database"),
        (_newer_schema, "schema 99 is newer"),
    ],
)
def test_unusable_cache_is_one_user_error(tmp_path: Path, make: Any, reason: str) -> None:
    folder = make(tmp_path)
    with pytest.raises(UserError) as caught:
        GenerationCache.open(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / FILE_NAME}: ")
    assert reason in message
    assert "AIGC_EVAL_CACHE_DIR" in message and "--no-cache" in message


def test_lock_held_past_the_timeout_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 0.05)
    with GenerationCache.open(tmp_path) as cache:
        other = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process stuck inside a write
        with pytest.raises(UserError, match=r"database is locked.*--no-cache"):
            cache.put_many([("k", "v", 1, "m")])
        assert cache.get_many(["k"]) == {}  # readers never wait for a writer in WAL mode
        other.execute("COMMIT")
        other.close()
        cache.put_many([("k", "v", 1, "m")])
        assert cache.get_many(["k"]) == {"k": CachedGeneration("v", 1)}


def test_use_after_close_is_a_bug_not_a_user_error(tmp_path: Path) -> None:
    with GenerationCache.open(tmp_path) as cache:
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        cache.get_many(["k"])
