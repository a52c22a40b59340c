"""The run folder is safe: unwritable paths and corrupt files are user errors (exit 2, one line),
torn generation logs resume cleanly, one process at a time, no stale temp files, normal modes,
and a crash is exit 3 with its traceback saved in the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aigc_eval.cli import main
from aigc_eval.errors import UserError
from aigc_eval.files import read_jsonl, write_atomic, write_json
from aigc_eval.run_folder import GenerationLog, RunFolder, remove_stale_temp_files, run_file

EXAMPLES = [
    ("样本-1", "The cat reads", "the green house."),
    ("样本-2", "A small dog sees", "an old book."),
    ("样本-3", "My friend writes about", "the quiet city."),
    ("样本-4", "The river walks past", "the morning light."),
]


def _suite(folder: Path, model: Path, **overrides: object) -> Path:
    """One greedy row of the tiny test model on four examples whose ids are Chinese (multi-byte)."""
    data = folder / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "prompt": p, "reference": r}, ensure_ascii=False) + "\n"
            for i, p, r in EXAMPLES
        ),
        encoding="utf-8",
    )
    suite = {
        "name": "safe",
        "models": [
            {
                "name": "greedy",
                "path": str(model),
                "dtype": "float32",
                "batch_size": 4,
                "generation": {"max_new_tokens": 4},
            }
        ],
        "tasks": [{"name": "t", "data": str(data), "id_field": "id", "lang": "en"}],
        "metrics": ["chrf"],
        "intervals": {"n_resamples": 0},
        **overrides,
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def finished_run(tmp_path: Path, tiny_lm_dir: Path) -> tuple[Path, Path]:
    """(suite file, run folder) of a finished run."""
    suite = _suite(tmp_path, tiny_lm_dir)
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    (run_dir,) = (tmp_path / "out" / "safe").iterdir()
    return suite, run_dir


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    # One message; a run that has saved generations adds how to resume on a line of its own.
    assert "Traceback" not in err and err.count("\n") <= 2, err
    assert err.startswith("aigc-eval: error: ")
    return err


def test_output_dir_under_a_regular_file_exits_2(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    suite = _suite(tmp_path, tiny_lm_dir)
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    assert main(["run", str(suite), "--output-dir", str(blocker / "reports"), "--quiet"]) == 2
    err = _one_error_line(capsys)
    assert f"{blocker} is a file, not a folder" in err


def test_output_dir_on_a_file_system_that_refuses_folders_exits_2(
    tmp_path: Path, tiny_lm_dir: Path, capsys
) -> None:
    # /proc refuses new folders even for root (chmod would not stop root).
    suite = _suite(tmp_path, tiny_lm_dir)
    assert main(["run", str(suite), "--output-dir", "/proc/aigc-eval-reports", "--quiet"]) == 2
    err = _one_error_line(capsys)
    assert "/proc/aigc-eval-reports" in err and "cannot write here" in err


@pytest.mark.parametrize("flag", ["--junit", "--markdown", "--json"])
def test_compare_output_flag_naming_a_folder_exits_2(finished_run, tmp_path: Path, capsys, flag: str) -> None:
    _, run_dir = finished_run
    folder = tmp_path / "outputs"
    folder.mkdir()
    assert main(["compare", str(run_dir), str(run_dir), flag, str(folder)]) == 2
    err = _one_error_line(capsys)
    assert f"{folder}: is a folder, not a file" in err


def test_report_output_naming_a_folder_exits_2(finished_run, tmp_path: Path, capsys) -> None:
    _, run_dir = finished_run
    assert main(["report", str(tmp_path / "out"), "-o", str(run_dir)]) == 2
    err = _one_error_line(capsys)
    assert f"{run_dir}: is a folder, not a file" in err


def test_write_atomic_under_a_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match=r"f is a file, not a folder"):
        write_atomic(tmp_path / "f" / "sub" / "out.json", "{}")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_corrupt_run_json_on_resume_exits_2(finished_run, capsys, content: str) -> None:
    suite, run_dir = finished_run
    (run_dir / "run.json").write_text(content, encoding="utf-8")
    assert main(["run", str(suite), "--resume", str(run_dir), "--quiet"]) == 2
    err = _one_error_line(capsys)
    assert f"{run_dir / 'run.json'}: not a valid run manifest" in err


@pytest.mark.parametrize("content", ["[]", '"text"', "null"])
def test_results_json_that_is_not_an_object_is_a_user_error(tmp_path: Path, capsys, content: str) -> None:
    (tmp_path / "results.json").write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=r"results\.json: not a valid results file"):
        RunFolder(tmp_path).read_record()
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "results.json: not a valid results file" in _one_error_line(capsys)


def _log(run_dir: Path) -> Path:
    return run_dir / "generations" / "greedy__t.jsonl"


def _predictions(run_dir: Path) -> list[str]:
    return [sample.prediction for sample in RunFolder(run_dir).read_samples()]


def test_log_torn_inside_a_multibyte_character_resumes_and_regenerates(finished_run) -> None:
    suite, run_dir = finished_run
    before = _predictions(run_dir)
    log = _log(run_dir)
    lines = log.read_bytes().split(b"\n")  # header, 4 samples, ""
    third = lines[3]
    cut = third.index("样".encode()) + 1  # one byte into a three-byte character
    log.write_bytes(b"\n".join(lines[:3]) + b"\n" + third[:cut])
    (run_dir / "results.json").unlink()

    assert main(["run", str(suite), "--resume", str(run_dir), "--quiet"]) == 0
    assert _predictions(run_dir) == before
    results = RunFolder(run_dir).read_record()
    assert results.results[0].timing.resumed_samples == 2
    # The torn bytes were cut off, not sealed into the log: every line is whole JSON again, and only
    # the examples the log lacked were generated again (each once: sampling is seeded per example).
    rows = log.read_bytes().decode("utf-8").split("\n")
    assert rows[-1] == "" and rows[:3] == [line.decode() for line in lines[:3]]
    kept = {json.loads(line)["index"] for line in lines[1:3]}
    regenerated = [json.loads(r)["index"] for r in rows[3:-1]]
    assert sorted(regenerated) == sorted({0, 1, 2, 3} - kept)


def test_corrupt_line_in_the_middle_of_a_log_names_file_and_line(finished_run, capsys) -> None:
    suite, run_dir = finished_run
    log = _log(run_dir)
    lines = log.read_text(encoding="utf-8").split("\n")
    lines[2] = '{"index": 1, "predic'
    log.write_text("\n".join(lines), encoding="utf-8")
    assert main(["run", str(suite), "--resume", str(run_dir), "--quiet"]) == 2
    assert f"{log}:3: corrupt generation log" in _one_error_line(capsys)


@pytest.mark.parametrize("content", [b"", b'{"key": "ab', "样".encode()[:2]])
def test_empty_or_torn_header_log_counts_as_empty_and_is_rewritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    log = GenerationLog(path, "k1")
    assert log.load() == {}
    log.append([{"index": 0, "prediction": "好"}])
    assert path.read_text(encoding="utf-8") == '{"key": "k1"}\n{"index": 0, "prediction": "好"}\n'
    assert GenerationLog(path, "k1").load() == {0: "好"}


def test_log_append_after_a_torn_tail_cuts_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = GenerationLog(path, "k")
    log.append([{"index": 0, "prediction": "a"}])
    with path.open("ab") as handle:
        handle.write(b'{"index": 1, "prediction": "\xe5\xa5')  # killed inside 好
    reloaded = GenerationLog(path, "k")
    assert reloaded.load() == {0: "a"}
    reloaded.append([{"index": 1, "prediction": "好"}])
    assert GenerationLog(path, "k").load() == {0: "a", 1: "好"}
    assert path.read_bytes().count(b"\n") == 3


_HOLD_LOCK = """
import sys
from pathlib import Path
from aigc_eval.run_folder import RunFolder
with RunFolder(Path(sys.argv[1])).lock():
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_second_process_on_a_run_folder_exits_2(finished_run, capsys) -> None:
    suite, run_dir = finished_run
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert main(["run", str(suite), "--resume", str(run_dir), "--quiet"]) == 2
        err = _one_error_line(capsys)
        assert f"run folder {run_dir} is in use by process {holder.pid}" in err
    finally:
        holder.communicate("\n", timeout=30)
    # The holder is gone: its lock went with it, and the folder can be resumed.
    assert main(["run", str(suite), "--resume", str(run_dir), "--quiet"]) == 0


def test_lock_is_released_on_exit_and_reacquired(tmp_path: Path) -> None:
    with RunFolder(tmp_path).lock():
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(UserError, match=f"in use by process {os.getpid()}"), RunFolder(tmp_path).lock():
            pass
    with RunFolder(tmp_path).lock():
        pass


def test_resume_removes_temp_files_left_by_a_kill(finished_run) -> None:
    suite, run_dir = finished_run
    stale = [run_dir / ".results.json.3f9a0c1d.tmp", run_dir / "generations" / ".samples.jsonl.k2_x9qzb.tmp"]
    for path in stale:
        path.write_text("half a file", encoding="utf-8")
    kept = run_dir / "notes.tmp"
    kept.write_text("mine", encoding="utf-8")
    assert main(["run", str(suite), "--resume", str(run_dir), "--quiet"]) == 0
    assert not any(path.exists() for path in stale) and kept.is_file()
    assert remove_stale_temp_files(run_dir) == []


def test_result_files_get_normal_permissions(tmp_path: Path, tiny_lm_dir: Path) -> None:
    previous = os.umask(0o022)
    try:
        suite = _suite(tmp_path, tiny_lm_dir)
        assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
        (run_dir,) = (tmp_path / "out" / "safe").iterdir()
        for name in ("results.json", "samples.jsonl", "stats.jsonl", "table.md", "report.html", "run.json"):
            assert (run_dir / name).stat().st_mode & 0o777 == 0o644, name
        os.umask(0o027)
        write_json(tmp_path / "private.json", {"a": 1})
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o640  # the umask is respected
    finally:
        os.umask(previous)


@pytest.mark.parametrize("name", ["..", "../escape", "a/b", "a\\b", ""])
def test_run_file_refuses_names_that_leave_the_run_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match="model row and task names"):
        run_file(tmp_path / "run", "generations", name)
    assert (
        run_file(tmp_path / "run", "generations", "m..x__t.jsonl")
        == tmp_path / "run/generations/m..x__t.jsonl"
    )


def test_read_jsonl_splits_on_newlines_only(tmp_path: Path) -> None:
    rows = [{"prediction": "line\u2028sep\u2029para\x85next\x0bvt\x0cff\rcr"}, {"prediction": "二"}]
    path = tmp_path / "rows.jsonl"
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert read_jsonl(path) == rows
    path.write_text('{"a": 1}\n[2]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"rows.jsonl:2: not a JSON object"):
        read_jsonl(path)


def test_internal_error_in_a_run_is_exit_3_with_the_traceback_in_the_run_folder(
    tmp_path: Path, tiny_lm_dir: Path, capsys, monkeypatch
) -> None:
    import aigc_eval.runner

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(aigc_eval.runner, "finalize", broken)
    suite = _suite(tmp_path, tiny_lm_dir)
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 3
    (run_dir,) = (tmp_path / "out" / "safe").iterdir()
    log = (run_dir / "internal-error.log").read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log and "in broken" in log
    assert "RuntimeError: boom" in log and "command: aigc-eval run" in log
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        "aigc-eval: internal error: RuntimeError: boom second line; this is a bug in aigc-eval"
    )
    assert f"please report it with {run_dir / 'internal-error.log'}" in err
    assert f"--resume {run_dir}" in err


def test_run_progress_in_a_log_is_plain_lines_and_tables_print(
    tmp_path: Path, tiny_lm_dir: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("AIGC_EVAL_PROGRESS_INTERVAL", "0")
    suite = _suite(tmp_path, tiny_lm_dir)
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == "aigc-eval: generate greedy × t: 0/4 (0%)"
    assert lines[1].startswith("aigc-eval: generate greedy × t: 4/4, done in 0:00:")
    assert any(line.startswith("aigc-eval: score greedy × t: 1/1, done in") for line in lines)
    assert "\x1b[" not in captured.err  # no terminal escape codes in a log
    assert "task: t" in captured.out and "chrf" in captured.out
