"""check-backends: two rows through the same prompts (real HF models), and the pure pieces it is made of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
import yaml

from aigc_eval.agreement import (
    Agreement,
    NLLAgreement,
    SampleAgreement,
    TokenView,
    divergence,
    first_difference,
    gate,
    nll_agreement,
)
from aigc_eval.cli import main
from tests.conftest import training_lines

MODELS = Path(__file__).resolve().parents[1] / "suites" / "models"
DEMO_EN = Path(__file__).resolve().parents[1] / "suites" / "data" / "demo_en.jsonl"


def write_suite(folder: Path, models: list[dict], data: Path, metrics: list) -> Path:
    suite = {
        "name": "agree",
        "models": models,
        "tasks": [{"name": "t", "data": str(data)}],
        "metrics": metrics,
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def tiny_suite(tmp_path: Path, tiny_lm_dir: Path) -> Path:
    """Row A samples (check-backends must decode it greedily anyway), batch 1; row B greedy, batch 4."""
    lines = [line.rstrip(".").split(" ") for line in training_lines()[:90:15]]
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": " ".join(w[:2]), "reference": " ".join(w[2:])}) + "\n" for w in lines)
    )
    common = {"path": str(tiny_lm_dir), "dtype": "float32", "device": "cpu", "fused_activations": False}
    models = [
        {
            "name": "b1",
            **common,
            "batch_size": 1,
            "generation": {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "seed": 7},
        },
        {"name": "b4", **common, "batch_size": 4, "generation": {"max_new_tokens": 8}},
    ]
    metrics = ["bleu", {"name": "perplexity", "target": "references", "context": "prompt"}]
    return write_suite(tmp_path, models, data, metrics)


def test_same_model_two_batch_sizes_agree_fully(
    tiny_suite: Path, tmp_path: Path, plain_lm, tiny_lm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from transformers import AutoTokenizer

    report = tmp_path / "agreement.json"
    code = main(
        ["check-backends", str(tiny_suite), "--rows", "b1,b4", "--n-trials", "200", "--json", str(report)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "exact match: 6/6 (100.0%)" in out and "\nAGREE\nwrote " in out
    result = json.loads(report.read_text())
    assert result["exact_match"] == 1.0 and result["divergences"] == [] and result["passed"]
    # Greedy although row b1 samples: its outputs are plain transformers' greedy continuations.
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    for sample in result["samples"]:
        prompt = json.loads((tmp_path / "data.jsonl").read_text().splitlines()[sample["index"]])["prompt"]
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            new = plain_lm.generate(
                ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )[0, ids.shape[1] :]
        assert sample["output_a"] == tokenizer.decode(new, skip_special_tokens=True)
        assert sample["nll_a"] > 0 and sample["tokens_a"] == sample["tokens_b"] > 0
    assert result["settings"]["b1"]["do_sample"] is False and result["settings"]["b1"]["max_new_tokens"] == 8
    nll = result["nll"]
    assert nll["texts"] == 6 and nll["max_abs"] < 1e-4 and nll["token_count_mismatches"] == 0
    assert {m["metric"] for m in result["metrics"]} == {"bleu", "ref_perplexity"}
    for metric in result["metrics"]:
        assert metric["delta"] == 0 and metric["p_value"] == 1.0


def test_trained_vs_untrained_disagree_with_first_diverging_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoTokenizer

    models = [
        {"name": "trained", "path": str(MODELS / "demo-gpt2"), "dtype": "float32", "device": "cpu"},
        {
            "name": "untrained",
            "path": str(MODELS / "demo-gpt2-untrained"),
            "dtype": "float32",
            "device": "cpu",
        },
    ]
    for row in models:
        row["generation"] = {"max_new_tokens": 12}
    suite = write_suite(tmp_path, models, DEMO_EN, ["bleu"])
    report = tmp_path / "agreement.json"
    argv = ["check-backends", str(suite), "--rows", "trained,untrained", "--limit", "3", "--n-trials", "200"]
    code = main([*argv, "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "first diverging token (trained's tokenizer)" in out and "DISAGREE: exact match" in out
    result = json.loads(report.read_text())
    assert result["exact_match"] < 1 and not result["passed"]
    mismatched = [s for s in result["samples"] if not s["match"]]
    assert len(result["divergences"]) == len(mismatched) > 0
    tokenizer = AutoTokenizer.from_pretrained(MODELS / "demo-gpt2")
    for sample, found in zip(mismatched, result["divergences"], strict=True):
        ids_a = tokenizer(sample["output_a"], add_special_tokens=False)["input_ids"]
        ids_b = tokenizer(sample["output_b"], add_special_tokens=False)["input_ids"]
        at = found["position"]
        assert ids_a[:at] == ids_b[:at] and (at == len(ids_a) or at == len(ids_b) or ids_a[at] != ids_b[at])
        assert found["token_a"] == (tokenizer.decode([ids_a[at]]) if at < len(ids_a) else None)
        assert found["token_b"] == (tokenizer.decode([ids_b[at]]) if at < len(ids_b) else None)
        assert f"A {found['token_a']!r} vs B {found['token_b']!r}" in out
    # The metric side: sacrebleu's own BLEU of each row's outputs, and the difference tested.
    refs = [json.loads(line)["reference"] for line in DEMO_EN.read_text().splitlines()[:3]]
    (bleu,) = result["metrics"]
    assert bleu["score_a"] == pytest.approx(
        sacrebleu.corpus_bleu([s["output_a"] for s in result["samples"]], [refs]).score
    )
    assert bleu["score_b"] == pytest.approx(
        sacrebleu.corpus_bleu([s["output_b"] for s in result["samples"]], [refs]).score
    )
    assert bleu["delta"] == pytest.approx(bleu["score_b"] - bleu["score_a"]) and bleu["delta"] < -10
    assert 0 < bleu["p_value"] <= 1
    assert result["nll"]["max_abs"] > 1.0  # trained and random weights score the references very differently


def test_first_difference_and_divergence_in_characters() -> None:
    assert first_difference([1, 2, 3], [1, 2, 4]) == 2
    assert first_difference([1, 2], [1, 2, 5]) == 2
    assert first_difference([1, 2], [1, 2]) is None
    chars = TokenView()
    found = divergence("t", 4, "x-4", "abcXyz", "abcY", chars)
    assert (found.position, found.token_a, found.token_b) == (3, "X", "Y")
    assert (found.common, found.continuation_a, found.continuation_b, found.unit) == (
        "abc",
        "Xyz",
        "Y",
        "character",
    )
    prefix = divergence("t", 0, "x", "abc", "abcd", chars)
    assert (prefix.position, prefix.token_a, prefix.token_b) == (3, None, "d")
    assert divergence("t", 0, "x", "same", "same", chars) is None
    assert divergence("t", 0, "x", "a" * 100, "a" * 100 + "b", chars, chars=10).common == "a" * 10


def _sample(nll_a: float, nll_b: float, tokens_b: int = 3, match: bool = True) -> SampleAgreement:
    return SampleAgreement("t", 0, "x", "o", "o" if match else "p", match, nll_a, nll_b, 3, tokens_b)


def test_nll_summary_values() -> None:
    samples = [_sample(10.0, 10.0 + d) for d in (0.0, 1.0, 2.0, 3.0)] + [_sample(8.0, 4.0, tokens_b=2)]
    summary = nll_agreement(samples)
    assert (summary.texts, summary.max_abs, summary.mean_abs) == (5, 4.0, 2.0)
    assert summary.quantiles["p50"] == 2.0 and summary.quantiles["p90"] == pytest.approx(3.6)
    assert summary.max_relative == pytest.approx(0.5) and summary.token_count_mismatches == 1


def _agreement(samples: list[SampleAgreement], min_exact: float, max_nll: float | None) -> Agreement:
    return Agreement(
        "s", ("a", "b"), {}, "character", samples, [], nll_agreement(samples), None, [], min_exact, max_nll
    )


def test_gate_thresholds() -> None:
    samples = [_sample(1.0, 1.0), _sample(1.0, 1.5), _sample(2.0, 2.0, match=False), _sample(1.0, 1.0)]
    assert gate(_agreement(samples, 0.75, 0.5)) == []
    (exact,) = gate(_agreement(samples, 0.8, None))
    assert "exact match 75.0% (3/4) is below --min-exact-match 80.0%" in exact
    (nll,) = gate(_agreement(samples, 0.5, 0.4))
    assert "max per-text NLL difference 0.5 nats exceeds --max-nll-diff 0.4" in nll
    assert len(gate(_agreement(samples, 1.0, 0.1))) == 2
    assert isinstance(_agreement(samples, 1.0, None).nll, NLLAgreement)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rows", "demo-greedy,nope"], "--rows: 'nope' is not a model row of the suite"),
        (["--rows", "demo-greedy"], "--rows: give two different model rows as A,B"),
        (["--rows", "demo-greedy,demo-greedy"], "--rows: give two different model rows as A,B"),
        (
            ["--rows", "demo-greedy,faithful-generator"],
            "'faithful-generator' (backend images) does not generate",
        ),
        (["--rows", "demo-greedy,demo-beam5", "--min-exact-match", "1.5"], "--min-exact-match: 1.5 is not a"),
    ],
)
def test_user_errors_exit_2(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    suite = Path(__file__).resolve().parents[1] / "suites" / "demo.yaml"
    assert main(["check-backends", str(suite), "--limit", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aigc-eval: error: ") and message in err and err.count("\n") == 1
