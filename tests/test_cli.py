"""The CLI end to end: `run` writes the run folder with the right numbers, resume after a
kill reproduces an uninterrupted run, and user errors exit 2 with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sacrebleu
import yaml
from rouge_score import rouge_scorer

from aigc_eval.cli import main
from aigc_eval.metrics.tokenize import CJKTokenizer
from aigc_eval.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "suites" / "models" / "demo-gpt2"


def _write_suite(folder: Path, **overrides) -> Path:
    rows = [
        {
            "name": "greedy",
            "path": str(DEMO_MODEL),
            "dtype": "float32",
            "batch_size": 4,
            "generation": {"max_new_tokens": 12},
        },
        {
            "name": "sample",
            "path": str(DEMO_MODEL),
            "dtype": "float32",
            "batch_size": 4,
            "generation": {"max_new_tokens": 12, "do_sample": True, "temperature": 0.9, "seed": 7},
        },
    ]
    suite = {
        "name": "e2e",
        "models": rows,
        "tasks": [
            {
                "name": "en",
                "data": str(REPO / "suites/data/demo_en.jsonl"),
                "id_field": "id",
                "lang": "en",
                "limit": 12,
            },
            {
                "name": "zh",
                "data": str(REPO / "suites/data/demo_zh.jsonl"),
                "id_field": "id",
                "lang": "zh",
                "limit": 12,
            },
        ],
        "metrics": [
            "bleu",
            "chrf",
            {"name": "rouge", "rouge_types": ["rouge1", "rougeL"]},
            {"name": "perplexity", "target": "references"},
        ],
        **overrides,
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
    return path


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "e2e").iterdir() if p.is_dir())


def test_run_writes_run_folder_with_reference_equal_scores(tmp_path: Path, capsys) -> None:
    suite = _write_suite(tmp_path)
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out")]) == 0
    run_dir = _run_dirs(tmp_path / "out")[0]
    for name in (
        "results.json",
        "samples.jsonl",
        "stats.jsonl",
        "table.md",
        "table.csv",
        "report.html",
        "suite.yaml",
        "run.json",
    ):
        assert (run_dir / name).is_file(), name
    folder = RunFolder(run_dir)
    results, samples = folder.read_record(), folder.read_samples()
    raw = json.loads((run_dir / "results.json").read_text())  # the file itself: versioned, strict
    assert raw["schema_version"] == 2 and len(results.config_hash) == 64
    assert results.environment.packages["sacrebleu"] == sacrebleu.__version__
    assert (
        results.models["greedy"].weights_sha256 is not None
        and len(results.models["greedy"].weights_sha256) == 64
    )
    assert len(samples) == 2 * 2 * 12

    for entry in results.results:
        rows = [s for s in samples if s.model == entry.model and s.task == entry.task]
        hyps = [s.prediction for s in rows]
        refs = [s.references[0] for s in rows]
        tok = "zh" if entry.task == "zh" else "13a"
        metrics = entry.metrics
        assert metrics["bleu"].score == sacrebleu.corpus_bleu(hyps, [refs], tokenize=tok).score
        assert metrics["chrf"].score == sacrebleu.corpus_chrf(hyps, [refs]).score
        assert f"tok:{tok}" in metrics["bleu"].signature
        scorer = rouge_scorer.RougeScorer(
            ["rouge1"], tokenizer=CJKTokenizer() if entry.task == "zh" else None
        )
        f1 = [scorer.score(r, h)["rouge1"].fmeasure for h, r in zip(hyps, refs, strict=True)]
        assert metrics["rouge1"].score == pytest.approx(sum(f1) / len(f1), abs=1e-12)
        assert metrics["ref_perplexity"].value > 1
        for value in metrics.values():  # seeded bootstrap interval on every score
            ci = value.ci
            assert ci is not None and ci.seed == 12345 and ci.n_resamples == 1000 and ci.confidence == 0.95
            assert ci.low is not None and ci.high is not None and ci.low <= value.value <= ci.high
        assert entry.timing.tokens_per_s is not None and entry.timing.tokens_per_s > 0
    # The comparison table shows one row per model setting, scores as in results.json.
    table = (run_dir / "table.csv").read_text().splitlines()
    assert table[0].startswith("model,en/bleu,en/bleu ci_low,en/bleu ci_high,en/chrf")
    assert table[1].startswith("greedy,") and table[2].startswith("sample,")
    printed = capsys.readouterr().out
    assert "task: zh" in printed and str(run_dir) in printed


def _results_without_timing(run_dir: Path) -> list[dict]:
    return [e.model_dump(exclude={"timing"}) for e in RunFolder(run_dir).read_record().results]


def test_killed_run_resumes_to_the_same_results(tmp_path: Path) -> None:
    suite = _write_suite(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "aigc_eval", "run", str(suite), "--output-dir", str(out), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        logs = list(out.glob("e2e/*/generations/greedy__en.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 5:  # header + one batch of 4
            process.send_signal(signal.SIGKILL)
            log = logs[0]
            break
        time.sleep(0.005)
    process.wait()
    assert log is not None, "the run finished before it could be killed"
    run_dir = log.parents[1]
    assert not (run_dir / "results.json").exists()
    finished_before = len(log.read_text().splitlines()) - 1
    assert 4 <= finished_before < 12

    assert main(["run", str(suite), "--resume", str(run_dir), "--quiet"]) == 0
    greedy_en = RunFolder(run_dir).read_record().entry("greedy", "en")
    assert greedy_en is not None and greedy_en.timing.resumed_samples == finished_before

    assert main(["run", str(suite), "--output-dir", str(tmp_path / "fresh"), "--quiet"]) == 0
    fresh_dir = next((tmp_path / "fresh" / "e2e").iterdir())
    assert _results_without_timing(run_dir) == _results_without_timing(fresh_dir)


def test_resume_refuses_when_generation_settings_changed(tmp_path: Path, capsys) -> None:
    suite = _write_suite(tmp_path)
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet", "--limit", "2"]) == 0
    run_dir = _run_dirs(tmp_path / "out")[0]
    changed = yaml.safe_load(suite.read_text())
    changed["models"][0]["generation"]["max_new_tokens"] = 5
    suite.write_text(yaml.safe_dump(changed), encoding="utf-8")
    assert main(["run", str(suite), "--resume", str(run_dir), "--quiet", "--limit", "2"]) == 2
    assert "greedy__en.jsonl: was generated by a different suite configuration" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: x\nmodels: [\n", "malformed YAML"),
        (
            "name: x\nmodels: [{name: m, path: p, temprature: 1}]\n"
            "tasks: [{name: t, data: d.jsonl}]\nmetrics: [bleu]\n",
            "models[0].temprature: unknown key",
        ),
        (
            "name: x\nmodels: [{name: m, path: ./no-such-model}]\ntasks: [{name: t, data: missing.jsonl}]\n"
            "metrics: [bleu]\n",
            "missing.jsonl: dataset file not found",
        ),
    ],
)
def test_run_user_errors_exit_2(tmp_path: Path, capsys, content: str, expected: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(content, encoding="utf-8")
    assert main(["run", str(path), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert err.startswith("aigc-eval: error: ")


def test_nonexistent_model_path_exits_2(tmp_path: Path, capsys) -> None:
    suite = _write_suite(tmp_path, models=[{"name": "m", "path": str(tmp_path / "no-such-model")}])
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "models[0].path: folder not found" in err and "no-such-model" in err and "Traceback" not in err


def _lines(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_score_json_matches_reference_libraries(tmp_path: Path, capsys) -> None:
    hyps = ["今天天气很好", "The cat sat on the mat.", ""]
    refs1 = ["今天天气不错", "The cat is on the mat.", "nothing here"]
    refs2 = ["今天是好天气", "A cat sat on a mat.", "empty"]
    args = [
        "score",
        "--metric",
        "bleu",
        "--metric",
        "chrf",
        "--metric",
        "ter",
        "--metric",
        "rouge",
        "--predictions",
        _lines(tmp_path / "h.txt", hyps),
        "--references",
        _lines(tmp_path / "r1.txt", refs1),
        "--references",
        _lines(tmp_path / "r2.txt", refs2),
        "--lang",
        "zh",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert out["bleu"]["score"] == sacrebleu.corpus_bleu(hyps, [refs1, refs2], tokenize="zh").score
    assert out["chrf"]["score"] == sacrebleu.corpus_chrf(hyps, [refs1, refs2]).score
    assert out["ter"]["score"] == sacrebleu.corpus_ter(hyps, [refs1, refs2], asian_support=True).score
    assert out["bleu"]["signature"].startswith("nrefs:2|")
    assert 0 < out["rouge1"]["score"] < 1 and "tok:cjk" in out["rouge1"]["signature"]


def test_score_perplexity_with_model(tmp_path: Path, capsys) -> None:
    texts = ["On Monday morning, Alice walked to the market.", "星期一早上，小明去市场买了三个红苹果。"]
    args = [
        "score",
        "--metric",
        "perplexity",
        "--model",
        str(DEMO_MODEL),
        "--predictions",
        _lines(tmp_path / "p.txt", texts),
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)["perplexity"]
    assert out["score"] > 1 and out["details"]["bits_per_byte"] > 0 and out["details"]["tokens"] > 10
    assert "agg:token-weighted" in out["signature"]


def test_score_user_errors(tmp_path: Path, capsys) -> None:
    hyp = _lines(tmp_path / "h.txt", ["a", "b"])
    ref = _lines(tmp_path / "r.txt", ["a"])
    assert main(["score", "--metric", "bleu", "--predictions", hyp, "--references", ref]) == 2
    assert "r.txt: 1 lines but the predictions have 2" in capsys.readouterr().err
    assert main(["score", "--metric", "blue", "--predictions", hyp, "--references", ref]) == 2
    assert "unknown metric" in capsys.readouterr().err
    assert (
        main(["score", "--metric", "bleu", "--predictions", str(tmp_path / "none.txt"), "--references", ref])
        == 2
    )
    assert "none.txt: predictions file not found" in capsys.readouterr().err
    assert (
        main(
            [
                "score",
                "--metric",
                "perplexity",
                "--predictions",
                hyp,
                "--model",
                str(tmp_path / "missing-model"),
            ]
        )
        == 2
    )
    assert "missing-model" in capsys.readouterr().err


def test_score_confidence_matches_sacrebleu_bootstrap(tmp_path: Path, capsys) -> None:
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "rug", "red", "blue"]
    hyps = [" ".join(words[(i * 7 + j) % 12] for j in range(6)) for i in range(60)]
    refs = [" ".join(words[(i * 5 + j) % 12] for j in range(6)) for i in range(60)]
    args = [
        "score",
        "--metric",
        "bleu",
        "--predictions",
        _lines(tmp_path / "h.txt", hyps),
        "--references",
        _lines(tmp_path / "r.txt", refs),
        "--confidence",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)["bleu"]
    expected = sacrebleu.BLEU().corpus_score(hyps, [refs], n_bootstrap=1000)  # seed 12345 by default
    # sacrebleu resamples in float32; ours sums exactly in float64 (see aigc_eval/stats.py).
    assert out["ci"]["mean"] == pytest.approx(expected._mean, abs=1e-4)
    assert out["ci"]["half_width"] == pytest.approx(expected._ci, abs=1e-4)
    assert out["signature"].endswith("|bs:1000|ci:0.95|seed:12345")


def test_run_with_baseline_compares_in_one_step(tmp_path: Path, capsys) -> None:
    suite = _write_suite(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(suite), "--output-dir", str(out), "--quiet", "--limit", "4"]) == 0
    baseline = _run_dirs(out)[0]
    args = [
        "run",
        str(suite),
        "--output-dir",
        str(out),
        "--quiet",
        "--limit",
        "4",
        "--baseline",
        str(baseline),
    ]
    assert main(args) == 0  # the same greedy and seeded rows: no change at all
    current = next(d for d in _run_dirs(out) if d != baseline)
    summary = (current / "compare.md").read_text()
    assert "**No regression**" in summary and (current / "junit.xml").is_file()
    assert json.loads((current / "compare.json").read_text())["has_regression"] is False
    assert main(["run", str(suite), "--quiet", "--baseline", str(tmp_path / "nope")]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_metric_error_after_generation_keeps_the_work_and_says_how_to_resume(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    # The module loads (checked before generating) but has no numeric `note`: known only on compute.
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    module = str(REPO / "tests" / "assets" / "word_overlap_metric.py")
    suite = _write_suite(tmp_path, metrics=[{"name": "evaluate", "module": module, "keys": ["note"]}])
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet", "--limit", "2"]) == 2
    err = capsys.readouterr().err
    assert "returned no numeric ['note']" in err and "--resume" in err and "Traceback" not in err
    run_dir = _run_dirs(tmp_path / "out")[0]
    assert len((run_dir / "generations" / "greedy__en.jsonl").read_text().splitlines()) == 3  # header + 2


def test_baseline_row_marks_significant_differences_in_the_tables(tmp_path: Path, capsys) -> None:
    rows = [
        {"name": "greedy", "path": str(DEMO_MODEL), "dtype": "float32", "generation": {"max_new_tokens": 12}},
        {
            "name": "untrained",
            "path": str(REPO / "suites/models/demo-gpt2-untrained"),
            "dtype": "float32",
            "generation": {"max_new_tokens": 12},
        },
    ]
    suite = _write_suite(
        tmp_path, models=rows, metrics=["bleu"], regression={"baseline": "greedy", "n_trials": 500}
    )
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out")]) == 0
    run_dir = _run_dirs(tmp_path / "out")[0]
    significance = RunFolder(run_dir).read_record().significance
    assert significance is not None
    marks = {(m.model, m.task, m.metric): m.verdict for m in significance.marks}
    assert marks == {("untrained", "en", "bleu"): "regression", ("untrained", "zh", "bleu"): "regression"}
    table = (run_dir / "table.md").read_text()
    assert "worse than `greedy`" in table and table.count("▼") == 2 + 1  # two cells and the legend
    assert "▼" in capsys.readouterr().out  # the printed table too
