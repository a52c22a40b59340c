"""The public Python API: run, load_run, Run.scores()/samples(), score, compare — checked against the
reference implementations on the run's own texts, not against numbers the API itself produced."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sacrebleu
import yaml

import aigc_eval
from aigc_eval.errors import UserError
from aigc_eval.run_folder import RunFolder

PROMPTS = [("s1", "The cat reads", "the green house."), ("s2", "A small dog sees", "an old book.")]
PROMPTS += [
    ("s3", "My friend writes about", "the quiet city."),
    ("s4", "The river walks past", "the morning light."),
]


def _suite(folder: Path, model: Path, baseline: bool = False) -> Path:
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": p, "reference": r}) + "\n" for i, p, r in PROMPTS))
    rows = [
        {
            "name": "greedy",
            "path": str(model),
            "dtype": "float32",
            "batch_size": 2,
            "generation": {"max_new_tokens": 5},
        },
        {
            "name": "short",
            "path": str(model),
            "dtype": "float32",
            "batch_size": 2,
            "generation": {"max_new_tokens": 2},
        },
    ]
    suite = {
        "name": "api",
        "models": rows,
        "tasks": [{"name": "t", "data": str(data), "id_field": "id", "lang": "en"}],
        "metrics": ["chrf", {"name": "perplexity", "options": {"target": "references"}}],
        "intervals": {"n_resamples": 200},
    }
    if baseline:
        suite["regression"] = {"baseline": "greedy", "n_trials": 200}
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def api_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> aigc_eval.Run:
    folder = tmp_path_factory.mktemp("api")
    return aigc_eval.run(_suite(folder, tiny_lm_dir, baseline=True), output_dir=folder / "reports")


def test_run_scores_are_a_tidy_frame_matching_sacrebleu(api_run: aigc_eval.Run) -> None:
    scores = api_run.scores()
    assert list(scores.columns[:4]) == ["model", "task", "metric", "score"]
    assert sorted(map(tuple, scores[["model", "metric"]].values)) == [
        ("greedy", "chrf"),
        ("greedy", "ref_perplexity"),
        ("short", "chrf"),
        ("short", "ref_perplexity"),
    ]
    samples = api_run.samples()
    assert len(samples) == 8 and set(samples["id"]) == {"s1", "s2", "s3", "s4"}
    for model in ("greedy", "short"):
        mine = samples[samples["model"] == model]
        expected = sacrebleu.corpus_chrf(list(mine["prediction"]), [[refs[0] for refs in mine["references"]]])
        row = scores[(scores["model"] == model) & (scores["metric"] == "chrf")].iloc[0]
        assert row["score"] == pytest.approx(expected.score, abs=1e-9)
        assert row["ci_low"] <= row["score"] <= row["ci_high"] and row["ci_kind"] == "bootstrap-percentile"
        chrf = sacrebleu.CHRF()
        chrf.corpus_score(list(mine["prediction"]), [[refs[0] for refs in mine["references"]]])
        assert row["signature"] == chrf.get_signature().format() + "|bs:200|ci:0.95|seed:12345"
        assert row["n"] == 4
    # Both rows score the same references with the same model: one perplexity.
    ppl = scores[scores["metric"] == "ref_perplexity"]["score"]
    assert ppl.nunique() == 1 and math.isfinite(ppl.iloc[0])


def test_load_run_reads_the_same_record_and_marks(api_run: aigc_eval.Run) -> None:
    again = aigc_eval.load_run(api_run.path / "results.json")
    assert again.record == api_run.record
    assert again.record.significance is not None and again.record.significance.baseline == "greedy"
    assert again.score("greedy", "t", "chrf").score == api_run.scores()["score"].iloc[0]
    with pytest.raises(UserError, match="no score 'bleu' for greedy × t"):
        again.score("greedy", "t", "bleu")


def test_compare_a_run_with_itself_finds_no_regression(api_run: aigc_eval.Run) -> None:
    comparison = aigc_eval.compare(api_run, api_run.path, n_trials=200)
    assert not comparison.has_regression
    assert {e.metric for e in comparison.entries} == {"chrf", "ref_perplexity"}
    assert all(e.delta == 0 for e in comparison.entries)


def test_score_matches_sacrebleu_with_several_references_and_cjk() -> None:
    predictions = ["今天天气很好", "the cat sat"]
    references = [["今天天气不错", "今天天气很好啊"], ["the cat sat on the mat", "a cat sat"]]
    scores = aigc_eval.score("bleu", predictions, references, lang="zh", n_resamples=0)
    streams = [[refs[0] for refs in references], [refs[1] for refs in references]]
    expected = sacrebleu.corpus_bleu(predictions, streams, tokenize="zh")
    assert scores["bleu"].score == pytest.approx(expected.score, abs=1e-12)
    assert scores["bleu"].ci is None and "nrefs:2" in scores["bleu"].signature


def test_score_perplexity_through_the_backend_lookup(tiny_lm_dir: Path, plain_lm) -> None:
    import torch
    from transformers import AutoTokenizer

    texts = ["the cat reads the green house", "an old book"]
    scores = aigc_eval.score("perplexity", texts, model=str(tiny_lm_dir), device="cpu", n_resamples=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    nll = tokens = 0.0
    for text in texts:  # an independent per-token NLL sum: one forward per token on its prefix, BOS first
        seq = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            for t in range(1, len(seq)):
                logits = plain_lm(torch.tensor([seq[:t]])).logits[0, -1]
                nll -= torch.log_softmax(logits.double(), dim=-1)[seq[t]].item()
        tokens += len(seq) - 1
    assert scores["perplexity"].score == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert scores["perplexity"].details["tokens"] == tokens


def test_load_run_migrates_an_old_schema_folder(v1_run: Path) -> None:
    run = aigc_eval.load_run(v1_run)
    raw = json.loads((v1_run / "results.json").read_text(encoding="utf-8"))
    assert raw["schema_version"] == 1 and run.record.schema_version == 2
    bleu = raw["results"][0]["metrics"]["bleu"]
    record = run.record.results[0].metrics["bleu"]
    assert record.score == bleu["score"] and record.details["bp"] == bleu["bp"]
    assert record.ci is not None and record.ci.low == bleu["ci"]["low"]
    assert run.record.models["demo-greedy"].weights_sha256 == raw["models"]["demo-greedy"]["weights_sha256"]
    assert len(run.samples()) == sum(r["n"] for r in raw["results"] if r["task"] != "shapes")
    assert RunFolder.open(v1_run).read_manifest().suite == "demo"
