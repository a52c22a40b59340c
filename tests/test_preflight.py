"""Plan-time checks: a suite mistake fails with exit 2 naming the file and key, before any generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from aigc_eval.cli import main
from aigc_eval.config import load_suite, parse_suite
from aigc_eval.errors import UserError
from aigc_eval.metrics.registry import output_names

ASSETS = Path(__file__).parent / "assets"


def _suite(folder: Path, model: Path, **overrides: Any) -> Path:
    """A runnable one-row, one-task suite on the tiny model, with ``overrides`` applied."""
    data = folder / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": p, "reference": r}) + "\n" for p, r in [("The cat", "reads"), ("A", "b")]
        ),
        encoding="utf-8",
    )
    suite = {
        "name": "pre",
        "models": [{"name": "m", "path": str(model), "generation": {"max_new_tokens": 4}}],
        "tasks": [{"name": "t", "data": "data.jsonl"}],
        "metrics": ["bleu"],
        **overrides,
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


def _fails_before_generating(suite: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Exit 2 with one line, and nothing generated (no generation log anywhere under ``out``)."""
    assert main(["run", str(suite), "--output-dir", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aigc-eval: error: {suite}: ") and "Traceback" not in err
    assert not list(out.rglob("*.jsonl"))
    return err


def test_the_suite_runs_without_the_mistakes(tmp_path: Path, tiny_lm_dir: Path) -> None:
    """The base suite of these tests is valid: each failure below is the one change it makes."""
    assert (
        main(["run", str(_suite(tmp_path, tiny_lm_dir)), "--output-dir", str(tmp_path / "o"), "--quiet"]) == 0
    )
    assert len(list((tmp_path / "o").rglob("generations/m__t.jsonl"))) == 1


def test_duplicate_metric_outputs(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    suite = _suite(tmp_path, tiny_lm_dir, metrics=["chrf++", {"name": "chrf", "word_order": 2}])
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    assert "metrics[1]: outputs 'chrf++', as metrics[0] does" in err


def test_chrf_with_word_order_is_named_as_sacrebleu_names_it() -> None:
    assert output_names("chrf", {}) == ("chrf",)
    assert output_names("chrf", {"word_order": 2}) == ("chrf++",)
    assert output_names("chrf", {"word_order": 1}) == ("chrf+",)
    assert output_names("chrf++", {}) == ("chrf++",)
    assert output_names("rouge", {"rouge_types": ["rouge1"]}) == ("rouge1",)
    assert output_names("perplexity", {"target": "references"}) == ("ref_perplexity",)
    assert output_names("evaluate", {"module": "m.py", "keys": ["exact"]}) == ("m.exact",)
    assert output_names("evaluate", {"module": "m.py"}) is None  # known only after a compute
    # chrF and chrF++ side by side are two different scores, not a clash.
    parse_suite(
        {
            "name": "s",
            "models": [{"name": "m", "path": "x"}],
            "tasks": [{"name": "t", "data": "d"}],
            "metrics": ["chrf", {"name": "chrf", "word_order": 2}],
        }
    )
    with pytest.raises(UserError, match=r"metrics\[1\]: outputs 'perplexity', as metrics\[0\] does"):
        parse_suite(
            {
                "name": "s",
                "models": [{"name": "m", "path": "x"}],
                "tasks": [{"name": "t", "data": "d"}],
                "metrics": ["perplexity", {"name": "perplexity", "stride": 8}],
            }
        )


def test_perplexity_model_that_is_no_row_and_no_path(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    suite = _suite(tmp_path, tiny_lm_dir, metrics=[{"name": "perplexity", "model": "./no-scorer"}])
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    assert "metrics[0].model: './no-scorer' is neither a model row nor an existing path" in err
    suite = _suite(tmp_path, tiny_lm_dir, metrics=[{"name": "perplexity", "model": "demo-greedy"}])
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    assert "metrics[0].model: 'demo-greedy' is neither a model row (m) nor a path" in err


def test_missing_evaluate_module(tmp_path: Path, tiny_lm_dir: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    suite = _suite(tmp_path, tiny_lm_dir, metrics=[{"name": "evaluate", "module": "metrics/overlap.py"}])
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    assert "metrics[0].module: 'metrics/overlap.py' not found" in err
    # A hub module name while HF_EVALUATE_OFFLINE is set (conftest sets it) cannot be fetched.
    suite = _suite(tmp_path, tiny_lm_dir, metrics=[{"name": "evaluate", "module": "no_such_hub_metric"}])
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    assert "metrics[0].module: evaluate module 'no_such_hub_metric' could not be loaded" in err
    assert "HF_EVALUATE_OFFLINE is set" in err


def test_max_length_larger_than_the_model_context(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    suite = _suite(tmp_path, tiny_lm_dir, metrics=[{"name": "perplexity", "max_length": 128}])
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    assert "metrics[0].max_length: 128 is larger than the 64-token context of 'm'" in err


def test_max_new_tokens_filling_the_context(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    rows = [{"name": "m", "path": str(tiny_lm_dir), "generation": {"max_new_tokens": 64}}]
    err = _fails_before_generating(_suite(tmp_path, tiny_lm_dir, models=rows), tmp_path / "out", capsys)
    assert "models[0].generation.max_new_tokens: 64 leaves no room for a prompt" in err


def test_unknown_backbone_is_a_schema_error(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    (tmp_path / "ref").mkdir()
    rows = [
        {"name": "m", "path": str(tiny_lm_dir), "generation": {"max_new_tokens": 4}},
        {"name": "g", "backend": "images", "images": {"shapes": "ref"}},
    ]
    tasks = [
        {"name": "t", "data": "data.jsonl"},
        {"name": "shapes", "kind": "image", "reference": "ref", "backbone": "inceptoin"},
    ]
    err = _fails_before_generating(
        _suite(tmp_path, tiny_lm_dir, models=rows, tasks=tasks), tmp_path / "out", capsys
    )
    assert (
        "tasks[1].backbone: unknown backbone 'inceptoin'; known backbones: clip, dinov2, efficientnet-lite0"
        in err
    )


def test_model_folder_without_tokenizer(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    model = tmp_path / "no-tokenizer"
    shutil.copytree(
        tiny_lm_dir, model, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*", "vocab*")
    )
    err = _fails_before_generating(_suite(tmp_path, model), tmp_path / "out", capsys)
    assert "models[0].path:" in err and "has no tokenizer files (one of tokenizer.json" in err


@pytest.mark.parametrize("path", ["./models/nope", "models/nope"])
def test_relative_folder_not_found(tmp_path: Path, tiny_lm_dir: Path, capsys, path: str) -> None:
    (tmp_path / "models").mkdir()  # `models/nope` beside an existing `models/`: a path, not a hub id
    rows = [{"name": "m", "path": path}]
    err = _fails_before_generating(_suite(tmp_path, tiny_lm_dir, models=rows), tmp_path / "out", capsys)
    assert f"models[0].path: folder not found: {path!r} (relative paths resolve against {tmp_path})" in err


def test_uncached_hub_id_while_offline(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    rows = [{"name": "m", "path": "no-such-org/no-such-model"}]
    err = _fails_before_generating(_suite(tmp_path, tiny_lm_dir, models=rows), tmp_path / "out", capsys)
    assert "models[0].path: 'no-such-org/no-such-model' is no folder" in err and "HF_HUB_OFFLINE" in err


def test_metric_option_that_cannot_work_fails_before_generating(
    tmp_path: Path, tiny_lm_dir: Path, capsys
) -> None:
    pytest.importorskip("sacrebleu")
    import importlib.util

    if importlib.util.find_spec("MeCab") is not None:
        pytest.skip("MeCab is installed, so ja-mecab works")
    suite = _suite(tmp_path, tiny_lm_dir, metrics=[{"name": "bleu", "tokenize": "ja-mecab"}])
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    assert "metrics[0]: bleu: tokenize 'ja-mecab' cannot be loaded" in err


def test_duplicate_yaml_key_names_key_and_line(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    suite = _suite(tmp_path, tiny_lm_dir)
    text = suite.read_text(encoding="utf-8").replace("name: pre\n", "name: pre\nseed: 1\nseed: 2\n")
    suite.write_text(text, encoding="utf-8")
    seed_lines = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("seed:")]
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    assert f"duplicate key 'seed' (first given on line {seed_lines[0]})" in err
    assert f"(line {seed_lines[1]}, column 1)" in err


def test_yaml_merge_keys_still_override(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nbase: &row {name: a, path: x, batch_size: 2}\n"
        "models:\n  - <<: *row\n    batch_size: 4\ntasks: [{name: t, data: d}]\nmetrics: [bleu]\n",
        encoding="utf-8",
    )
    with pytest.raises(UserError, match="base: unknown key"):  # merge worked; `base` itself is extra
        load_suite(path)


@pytest.mark.parametrize(
    ("where", "name"),
    [("models", "../../x"), ("tasks", "../x"), ("models", "a/b"), ("tasks", ".hidden"), ("name", "..")],
)
def test_names_cannot_leave_the_run_folder(
    tmp_path: Path, tiny_lm_dir: Path, capsys, where: str, name: str
) -> None:
    suite = _suite(tmp_path, tiny_lm_dir)
    data = yaml.safe_load(suite.read_text(encoding="utf-8"))
    if where == "name":
        data["name"] = name
    else:
        data[where][0]["name"] = name
    suite.write_text(yaml.safe_dump(data), encoding="utf-8")
    err = _fails_before_generating(suite, tmp_path / "out", capsys)
    key = "name" if where == "name" else f"{where}[0].name"
    assert (
        f"{key}: {name!r} must start with a letter or digit and hold only letters, digits and . _ + -" in err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "suite.yaml"]  # nothing beside it


# -- run folder safety -----------------------------------------------------------------------------


def _only_run_dir(out: Path) -> Path:
    [run_dir] = [p for p in (out / "pre").iterdir() if p.is_dir()]
    return run_dir


def test_a_resumed_run_folder_in_use_is_refused(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    from aigc_eval.run_folder import RunFolder

    suite, out = _suite(tmp_path, tiny_lm_dir), tmp_path / "out"
    assert main(["run", str(suite), "--output-dir", str(out), "--quiet"]) == 0
    run_dir = _only_run_dir(out)
    capsys.readouterr()
    with RunFolder.open(run_dir).lock():  # another process's run holds it
        assert main(["run", str(suite), "--quiet", "--resume", str(run_dir)]) == 2
    assert f"run folder {run_dir} is in use by process" in capsys.readouterr().err
    stale = run_dir / ".results.json.0123abcd.tmp"  # left by a write a kill interrupted
    stale.write_text("{", encoding="utf-8")
    assert main(["run", str(suite), "--quiet", "--resume", str(run_dir)]) == 0
    assert not stale.exists()


def test_an_internal_error_is_logged_in_the_run_folder(
    tmp_path: Path, tiny_lm_dir: Path, capsys, monkeypatch
) -> None:
    import aigc_eval.execute as execute

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("scoring broke")

    monkeypatch.setattr(execute, "sample_statistics", broken)
    out = tmp_path / "out"
    assert main(["run", str(_suite(tmp_path, tiny_lm_dir)), "--output-dir", str(out), "--quiet"]) == 3
    run_dir = _only_run_dir(out)
    assert "RuntimeError: scoring broke" in (run_dir / "internal-error.log").read_text(encoding="utf-8")
    assert f"--resume {run_dir}" in capsys.readouterr().err
    assert len((run_dir / "generations" / "m__t.jsonl").read_text().splitlines()) == 3  # kept: header + 2
