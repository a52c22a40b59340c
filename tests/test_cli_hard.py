"""The CLI under stress: strict JSON, exit 3 (never 1) for a crash, progress in logs and CI,
and tables that never cut a number."""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from aigc_eval.cli import _print_scores, main
from aigc_eval.console import PROGRESS_INTERVAL_ENV, LineProgress, print_table
from aigc_eval.files import write_json, write_jsonl
from aigc_eval.metrics.base import Score
from aigc_eval.scoring import PROGRESS_STEP


def _strict_loads(text: str) -> object:
    """json.loads that refuses NaN/Infinity, as every non-Python JSON reader does."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _lines(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def _undefined_perplexity() -> Score:
    """What perplexity over zero scored tokens aggregates to."""
    return Score(
        "perplexity",
        math.nan,
        "ppl|model:x",
        False,
        {"bits_per_byte": math.nan, "tokens": 0.0, "nll": 0.0},
        {
            "kind": "bootstrap-percentile",
            "low": math.nan,
            "high": math.inf,
            "mean": math.nan,
            "half_width": math.nan,
            "seed": 1,
        },
    )


def test_score_record_turns_undefined_values_into_null_with_a_reason() -> None:
    out = _undefined_perplexity().to_record()
    assert out.score is None and out.score_unavailable is not None and "nan" in out.score_unavailable
    assert out.details["bits_per_byte"] is None and out.details["tokens"] == 0.0
    assert out.ci is not None and (out.ci.low, out.ci.high, out.ci.mean, out.ci.half_width) == (None,) * 4
    assert out.ci.seed == 1 and out.ci.kind == "bootstrap-percentile"
    assert Score("bleu", 31.2, "sig").to_record().score_unavailable is None


def test_score_json_output_is_strict_json(capsys) -> None:
    _print_scores({"perplexity": _undefined_perplexity().to_record()}, as_json=True)
    out = _strict_loads(capsys.readouterr().out)
    assert out["perplexity"]["score"] is None  # type: ignore[index]
    _print_scores({"perplexity": _undefined_perplexity().to_record()}, as_json=False)
    assert "perplexity  n/a (" in capsys.readouterr().out


def test_json_writers_refuse_nan_instead_of_writing_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"results.json: Out of range float values"):
        write_json(tmp_path / "results.json", {"score": math.nan})
    with pytest.raises(ValueError, match=r"samples.jsonl: Out of range float values"):
        write_jsonl(tmp_path / "samples.jsonl", [{"score": 1.0}, {"score": math.inf}])
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_internal_error_is_exit_3_with_one_line_and_a_log(tmp_path: Path, capsys, monkeypatch) -> None:
    import aigc_eval.scoring

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("resampler exploded")

    monkeypatch.setattr(aigc_eval.scoring, "aggregate_with_intervals", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    hyp = _lines(tmp_path / "h.txt", ["a cat", "a dog"])
    assert main(["score", "--metric", "bleu", "--predictions", hyp, "--references", hyp, "--quiet"]) == 3
    err = capsys.readouterr().err
    (log,) = tmp_path.glob("aigc-eval-internal-error-*.log")
    assert err == (
        "aigc-eval: internal error: RuntimeError: resampler exploded; this is a bug in aigc-eval, "
        f"please report it with {log}\n"
    )
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert "RuntimeError: resampler exploded" in text and "command: aigc-eval score --metric bleu" in text


def test_progress_lines_on_a_non_terminal_stderr(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")  # a line per update
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat"]
    hyps = [" ".join(words[(i * 3 + j) % 8] for j in range(5)) for i in range(40)]
    refs = [" ".join(words[(i * 5 + j) % 8] for j in range(5)) for i in range(40)]
    args = ["score", "--metric", "bleu", "--predictions", _lines(tmp_path / "h.txt", hyps)]
    args += ["--references", _lines(tmp_path / "r.txt", refs), "--confidence", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    _strict_loads(captured.out)  # progress never mixes into stdout
    lines = captured.err.splitlines()
    assert lines[0] == "aigc-eval: bleu: sample statistics of 40 lines: 0/1 (0%)"
    assert lines[1].startswith("aigc-eval: bleu: sample statistics of 40 lines: 1/1, done in 0:00:0")
    bootstrap = [line for line in lines if line.startswith("aigc-eval: bleu: bootstrap: ")]
    assert bootstrap[0] == "aigc-eval: bleu: bootstrap: 0/1000 (0%)"
    assert any("/s, ETA 0:00:0" in line for line in bootstrap[2:-1])
    assert bootstrap[-1].startswith("aigc-eval: bleu: bootstrap: 1000/1000, done in ")
    assert len(bootstrap) == 1 + 1000 // PROGRESS_STEP  # a line per step of resamples

    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_interval_from_the_environment_must_be_a_number(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "soon")
    hyp = _lines(tmp_path / "h.txt", ["a"])
    assert main(["score", "--metric", "bleu", "--predictions", hyp, "--references", hyp]) == 2
    assert f"{PROGRESS_INTERVAL_ENV}='soon': not a number of seconds" in capsys.readouterr().err


def test_line_progress_throttles_and_reports_rate_and_eta() -> None:
    now = [100.0]
    stream = io.StringIO()
    progress = LineProgress(10, stream, clock=lambda: now[0])
    advance = progress("generate m × t", 100)
    advance(20)  # at once: samples a resumed run already had; the rate starts here
    for _ in range(8):
        now[0] += 3
        advance(10)  # 10 samples every 3 s
    assert stream.getvalue().splitlines() == [
        "aigc-eval: generate m × t: 0/100 (0%)",
        "aigc-eval: generate m × t: 60/100 (60%), 3.33/s, ETA 0:00:12",  # the first update 10 s later
        "aigc-eval: generate m × t: 100/100, done in 0:00:24",  # the end is always shown
    ]
    advance(1)  # past the end: nothing more
    assert stream.getvalue().count("\n") == 3


def test_wide_table_in_a_log_is_split_never_cut(capsys) -> None:
    columns = [f"metric_{i:02d} ↑" for i in range(16)]
    frame = pd.DataFrame(
        [[f"0.{5218 + 7 * i + r:04d} ± 0.0{100 + i + r:03d}" for i in range(16)] for r in range(2)],
        index=pd.Index(["greedy-baseline", "sample-t0.9"], name="model"),
        columns=columns,
    )
    frame.iloc[0, 5] = "x" * 300  # one cell wider than any log line
    print_table("en", frame)
    out = capsys.readouterr().out
    assert "…" not in out
    for cell in [*columns, *(str(v) for v in frame.to_numpy().ravel())]:
        assert cell in out, cell
    parts = out.count("task: en (part ")
    assert parts >= 3 and out.count("greedy-baseline") == parts and out.count("sample-t0.9") == parts
    parts_text = out.split("task: en (part ")[1:]
    narrow = [part for part in parts_text if "x" * 300 not in part]
    assert len(narrow) == parts - 1  # only the table of the 300-wide cell is wider than the log
    assert max(len(line) for part in narrow for line in part.splitlines()) <= 240


def test_ctrl_c_outside_a_run_is_a_one_line_user_error(tmp_path: Path, capsys, monkeypatch) -> None:
    import aigc_eval.scoring

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(aigc_eval.scoring, "aggregate_with_intervals", interrupted)
    hyp = _lines(tmp_path / "h.txt", ["a cat"])
    assert main(["score", "--metric", "bleu", "--predictions", hyp, "--references", hyp, "--quiet"]) == 2
    assert capsys.readouterr().err == "aigc-eval: error: interrupted\n"
