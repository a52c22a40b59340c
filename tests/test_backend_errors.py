"""Backend failures a user can cause end as one message and exit 2; long prompts are cut, not fatal;
tokens/s counts generated tokens only, without warm-up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from aigc_eval.backends.base import GenerationSettings
from aigc_eval.backends.hf import HFBackend, HFRow
from aigc_eval.cli import main
from aigc_eval.execute import throughput


def hf(path: Path | str, **options: object) -> HFBackend:
    """An HFBackend built from its row, as ``create_backend`` builds a suite's."""
    return HFBackend(HFRow(name="m", path=str(path), **options))


LONG_PROMPT = " ".join(["The old teacher remembers the quiet city."] * 12)  # well over 64 tokens


@pytest.fixture
def truncated_model(tiny_lm_dir: Path, tmp_path: Path) -> Path:
    """The tiny model with its weights cut to half their bytes (an interrupted download)."""
    folder = tmp_path / "broken"
    shutil.copytree(tiny_lm_dir, folder)
    weights = folder / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    return folder


def _suite(folder: Path, model: Path, prompts: list[str], **generation: object) -> Path:
    data = folder / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": p, "reference": "x"}) + "\n" for p in prompts), encoding="utf-8"
    )
    suite = {
        "name": "be",
        "models": [{"name": "m", "path": str(model), "batch_size": 2, "generation": generation}],
        "tasks": [{"name": "t", "data": str(data)}],
        "metrics": ["bleu"],
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


def test_truncated_safetensors_in_run_is_a_user_error(truncated_model: Path, tmp_path: Path, capsys) -> None:
    suite = _suite(tmp_path, truncated_model, ["The cat"], max_new_tokens=4)
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{truncated_model / 'model.safetensors'}: corrupt or truncated weights file" in err
    assert "re-download the model, or re-save it" in err and "Traceback" not in err


def test_truncated_safetensors_in_score_is_a_user_error(
    truncated_model: Path, tmp_path: Path, capsys
) -> None:
    predictions = tmp_path / "p.txt"
    predictions.write_text("The cat reads a long letter.\n", encoding="utf-8")
    argv = [
        "score",
        "--metric",
        "perplexity",
        "--predictions",
        str(predictions),
        "--model",
        str(truncated_model),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{truncated_model / 'model.safetensors'}: corrupt or truncated weights file" in err


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_perplexity_of_no_tokens_is_a_user_error(
    tiny_lm_dir: Path, tmp_path: Path, capsys, content: str
) -> None:
    predictions = tmp_path / "empty.txt"
    predictions.write_text(content, encoding="utf-8")
    argv = ["score", "--metric", "perplexity", "--predictions", str(predictions), "--model", str(tiny_lm_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "perplexity: the" in err and "hold no token to score" in err and "Traceback" not in err


def test_long_prompt_is_cut_from_the_left(tiny_lm_dir: Path) -> None:
    backend = hf(str(tiny_lm_dir), batch_size=2)
    settings = GenerationSettings(max_new_tokens=8)
    ids = backend.tokenizer(LONG_PROMPT)["input_ids"]
    assert len(ids) > 64
    tail = backend.tokenizer.decode(ids[-(64 - 8) :])
    assert backend.tokenizer(tail)["input_ids"] == ids[-(64 - 8) :]  # the tail re-encodes to itself
    assert backend.truncated_prompts([LONG_PROMPT, "The cat"], settings) == 1
    assert backend.generate([LONG_PROMPT], settings) == backend.generate([tail], settings)


def test_long_prompt_in_a_run_is_counted_in_results(tiny_lm_dir: Path, tmp_path: Path, capsys) -> None:
    suite = _suite(tmp_path, tiny_lm_dir, [LONG_PROMPT, "The cat", LONG_PROMPT + " Again"], max_new_tokens=8)
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: m × t: 2 of 3 prompts do not fit the model's context with max_new_tokens 8" in err
    [results] = list((tmp_path / "out").rglob("results.json"))
    [entry] = json.loads(results.read_text(encoding="utf-8"))["results"]
    assert entry["timing"]["truncated_prompts"] == 2 and entry["n"] == 3


def test_batch_callback_counts_generated_tokens(tiny_lm_dir: Path, plain_lm) -> None:
    """The count equals the new tokens plain transformers generates up to and including EOS."""
    backend = hf(str(tiny_lm_dir), batch_size=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    prompts = ["The cat", "My friend reads an old book and then", "今天天气"]
    settings = GenerationSettings(max_new_tokens=10)
    counts: list[tuple[list[int], int]] = []
    backend.generate(prompts, settings, on_batch=lambda idx, _texts, tokens: counts.append((idx, tokens)))
    expected = {}
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = plain_lm.generate(
                ids,
                max_new_tokens=10,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        expected[i] = out.shape[1] - ids.shape[1]
    assert sorted(i for idx, _ in counts for i in idx) == [0, 1, 2]
    for idx, tokens in counts:
        assert tokens == sum(expected[i] for i in idx)


def test_tokens_per_s_leaves_out_the_warm_up_batch() -> None:
    timing = throughput(0.0, [(5.0, 100), (6.0, 30), (8.0, 50)])  # batch 1 took 5 s: warm-up
    assert timing["tokens_per_s"] == round(80 / 3, 2)
    assert timing["generated_tokens"] == 180 and timing["generation_s"] == 8.0
    assert timing["timed_tokens"] == 80 and timing["timed_s"] == 3.0
    assert timing["tokens_per_s_method"].endswith("over 2 of 3 batches; the first (warm-up) left out")
    single = throughput(0.0, [(2.0, 40)])
    assert single["tokens_per_s"] is None and single["generated_tokens"] == 40
    assert "single batch" in single["tokens_per_s_method"]


def test_run_records_how_tokens_per_s_was_measured(tiny_lm_dir: Path, tmp_path: Path) -> None:
    suite = _suite(
        tmp_path, tiny_lm_dir, ["The cat", "A small dog", "My friend", "The river"], max_new_tokens=6
    )
    assert main(["run", str(suite), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    [results] = list((tmp_path / "out").rglob("results.json"))
    data = json.loads(results.read_text(encoding="utf-8"))
    timing = data["results"][0]["timing"]
    # timed_s is rounded to 0.1 ms in the record, tokens_per_s computed before rounding.
    assert timing["tokens_per_s"] == pytest.approx(timing["timed_tokens"] / timing["timed_s"], rel=0.02)
    assert (
        0 < timing["timed_tokens"] < timing["generated_tokens"] <= 4 * 6
    )  # two batches of 2, at most 6 new each
    assert (
        timing["tokens_per_s_method"]
        == "generated tokens / time over 1 of 2 batches; the first (warm-up) left out"
    )
    assert data["models"]["m"]["device"] == "cpu"


def test_score_with_a_model_folder_without_tokenizer(tiny_lm_dir: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_lm_dir, model, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    predictions = tmp_path / "p.txt"
    predictions.write_text("The cat reads a long letter.\n", encoding="utf-8")
    argv = ["score", "--metric", "perplexity", "--predictions", str(predictions), "--model", str(model)]
    assert main(argv) == 2
    assert f"model {str(model)!r}: {model} has no tokenizer files" in capsys.readouterr().err
