"""`aigc-eval cache stats | clear | prune` on a real cache in a temp folder: output, exit codes,
and one-line user errors for a bad age or an unusable cache."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from aigc_eval.cache import FILE_NAME, GenerationCache
from aigc_eval.cli import main

AGES = {"a": 100.0, "b": 600.0, "c": 5 * 3600.0, "d": 2 * 86400.0, "e": 3 * 7 * 86400.0}


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache holding entries a..e last used AGES seconds ago, under two labels."""
    folder = tmp_path / "generations"
    monkeypatch.setenv("AIGC_EVAL_CACHE_DIR", str(folder))
    with GenerationCache.open(folder) as cache:
        cache.put_many((key, f"text {key}", 3, "hf:demo" if key < "d" else "openai:mini") for key in AGES)
    now = time.time()
    with closing(sqlite3.connect(folder / FILE_NAME)) as db, db:
        rows = [(now - seconds, key) for key, seconds in AGES.items()]
        db.executemany("UPDATE generations SET last_used = ? WHERE key = ?", rows)
    return folder


def test_stats_table(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"generation cache: {cache_dir / FILE_NAME}"
    assert lines[1].startswith("entries: 5 (") and lines[1].endswith(" KiB on disk)")
    assert lines[2].startswith("last used: ") and lines[2].count(" UTC") == 2
    assert lines[3:] == ["label        entries", "hf:demo            3", "openai:mini        2"]


def test_stats_json(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "stats", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == str(cache_dir / FILE_NAME)
    assert (out["entries"], out["labels"]) == (5, {"hf:demo": 3, "openai:mini": 2})
    assert out["size_bytes"] >= (cache_dir / FILE_NAME).stat().st_size > 0
    now = datetime.now(timezone.utc)
    oldest, newest = datetime.fromisoformat(out["oldest_use"]), datetime.fromisoformat(out["newest_use"])
    assert oldest.utcoffset() == newest.utcoffset() == timedelta(0)
    assert abs((now - oldest).total_seconds() - AGES["e"]) < 60
    assert abs((now - newest).total_seconds() - AGES["a"]) < 60


def test_stats_of_a_new_cache_creates_it(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AIGC_EVAL_CACHE_DIR", str(tmp_path / "fresh"))
    assert main(["cache", "stats", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["entries"], out["oldest_use"], out["labels"]) == (0, None, {})
    assert (tmp_path / "fresh" / FILE_NAME).is_file()


def test_clear(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 5 entries from {cache_dir / FILE_NAME}\n"
    with GenerationCache.open(cache_dir) as cache:
        assert cache.stats().entries == 0


@pytest.mark.parametrize(
    ("age", "kept"),
    [("90s", ""), ("5m", "a"), ("1h", "ab"), ("1.5d", "abc"), ("30d", "abcde"), ("2w", "abcd"), ("0d", "")],
)
def test_prune_units(cache_dir: Path, capsys: pytest.CaptureFixture[str], age: str, kept: str) -> None:
    assert main(["cache", "prune", "--older-than", age]) == 0
    removed = len(AGES) - len(kept)
    assert capsys.readouterr().out == (
        f"removed {removed} entries last used over {age} ago from {cache_dir / FILE_NAME}\n"
    )
    with GenerationCache.open(cache_dir) as cache:
        assert "".join(sorted(cache.get_many(list(AGES)))) == kept


@pytest.mark.parametrize("age", ["30", "30x", "d", "-1d", "1e3d", "nan d", "30 days", "99999999999d"])
def test_prune_bad_age_is_exit_2_naming_the_flag(cache_dir: Path, capsys, age: str) -> None:
    assert main(["cache", "prune", f"--older-than={age}"]) == 2  # "=": "-1d" is not taken for a flag
    err = capsys.readouterr().err
    assert err == (
        f"aigc-eval: error: --older-than {age!r}: not an age; give a number and a unit "
        "s, m, h, d or w, e.g. 30d or 12h\n"
    )
    with GenerationCache.open(cache_dir) as cache:
        assert cache.stats().entries == 5


def test_unusable_cache_is_exit_2_without_traceback(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / FILE_NAME).write_bytes(b"garbage" * 1000)
    monkeypatch.setenv("AIGC_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    for command in (["stats"], ["clear"], ["prune", "--older-than", "1d"]):
        assert main(["cache", *command]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1
        assert captured.err.startswith(f"aigc-eval: error: {tmp_path / 'cache' / FILE_NAME}: cannot use")
        assert "file is not a database" in captured.err and "--no-cache" in captured.err


def test_cache_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["cache"])
    assert exited.value.code == 2
    assert "stats,clear,prune" in capsys.readouterr().err
