"""The ``openai`` backend against a real vLLM OpenAI-compatible server on loopback.

The server runs from the vLLM venv (``.venv-vllm``, built by ``.ci/run``) and is started once for this
module; the tests themselves run in any venv with httpx (and torch for the HF reference). A fault proxy
(``tests/fault_proxy.py``) sits in front of it to inject 429/500/dropped connections/slow answers/bad
JSON. Tests needing the server are marked ``vllm`` and skip when ``.venv-vllm`` is absent.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aigc_eval.backends import create_backend
from aigc_eval.backends.base import GenerationSettings, example_seed
from aigc_eval.backends.openai import OpenAIBackend, OpenAIRow, wait_until_ready
from aigc_eval.config import parse_row
from aigc_eval.errors import RUN_DIR_ATTRIBUTE, UserError

sys.path.insert(0, str(Path(__file__).parent))
from fault_proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
DEMO = ROOT / "suites" / "models" / "demo-gpt2"
DEMO_EN = ROOT / "suites" / "data" / "demo_en.jsonl"
SERVED = "demo-gpt2"
COMPLETIONS = "/v1/completions"
PROMPTS = [json.loads(line)["prompt"] for line in DEMO_EN.read_text().splitlines()[:6]]
TEXTS = [
    "On Sunday afternoon, David walked to the market and bought two sweet oranges.",
    "Bob lives in Paris and works as a teacher.",
    "It",
    "",
]
vllm = pytest.mark.vllm
# The client timeout of the fault test and the proxy's late answer: generous, because a loaded 2-core
# machine can take seconds for a real answer, which must not time out.
TIMEOUT_S, SLOW_S = 6.0, 8.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's OpenAI server on the demo GPT-2, on 127.0.0.1: its API root."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} is absent (CI builds it: .ci/run)")
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TORCHDYNAMO_DISABLE": "1",
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(DEMO),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "128",
        "--enforce-eager", "--served-model-name", SERVED, "--enable-tokenizer-info-endpoint",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        try:
            wait_until_ready(base_url, timeout=180)
        except UserError:
            pytest.fail(f"vLLM server did not start: {log.read_text()[-2000:]}")
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy(server: str) -> Iterator[FaultProxy]:
    with FaultProxy(server.removesuffix("/v1"), retry_after=1.0, slow_s=SLOW_S) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def clean(proxy: FaultProxy) -> FaultProxy:
    proxy.reset()
    return proxy


@pytest.fixture(scope="module")
def hf():
    from aigc_eval.backends.hf import HFRow

    return create_backend(HFRow(name="hf", path=str(DEMO), dtype="float32", batch_size=4))


def _row(base_url: str, **options) -> OpenAIRow:
    row = parse_row({"name": "served", "backend": "openai", "base_url": base_url, "model": SERVED, **options})
    assert isinstance(row, OpenAIRow)
    return row


def _generations(proxy: FaultProxy) -> list[dict]:
    """Generation request bodies the server received (scoring requests echo)."""
    return [body for path, body in proxy.bodies if path == COMPLETIONS and not body.get("echo")]


GREEDY = GenerationSettings(max_new_tokens=16)


# -- without a server ---------------------------------------------------------------------------------


def test_row_rejects_a_key_in_api_key_env_and_a_bad_url() -> None:
    with pytest.raises(UserError, match="NAME of an environment variable"):
        parse_row(
            {"name": "x", "backend": "openai", "base_url": "http://h/v1", "model": "m", "api_key_env": "sk-1"}
        )
    with pytest.raises(UserError, match="no http"):
        parse_row({"name": "x", "backend": "openai", "base_url": "localhost:8000", "model": "m"})


def test_check_row_refuses_what_the_api_cannot_carry(monkeypatch: pytest.MonkeyPatch) -> None:
    row = _row("http://127.0.0.1:9/v1", generation={"repetition_penalty": 1.2})
    with pytest.raises(UserError, match=r"models\[0\].generation.repetition_penalty: .*extra_body"):
        OpenAIBackend.check_row(row, ROOT, lambda option: f"suite.yaml: models[0].{option}")
    monkeypatch.delenv("AIGC_TEST_MISSING_KEY", raising=False)
    row = _row("http://127.0.0.1:9/v1", api_key_env="AIGC_TEST_MISSING_KEY")
    with pytest.raises(UserError, match="AIGC_TEST_MISSING_KEY is not set"):
        OpenAIBackend.check_row(row, ROOT, lambda option: f"suite.yaml: models[0].{option}")


def test_unreachable_server_is_a_one_line_user_error() -> None:
    row = _row(f"http://127.0.0.1:{_free_port()}/v1", max_retries=1, backoff=0.01)
    with pytest.raises(UserError) as error:
        create_backend(row)
    message = str(error.value)
    assert "\n" not in message and "cannot reach" in message and "after 1 retries" in message


# -- against the real server --------------------------------------------------------------------------


@vllm
def test_greedy_equals_hf_backend(clean: FaultProxy, hf) -> None:
    backend = create_backend(_row(clean.url, max_concurrency=4))
    arrived: list[int] = []
    texts = backend.generate(PROMPTS, GREEDY, on_batch=lambda i, t, n: arrived.extend(i))
    assert texts == hf.generate(PROMPTS, GREEDY)
    assert sorted(arrived) == list(range(len(PROMPTS)))  # one on_batch call per sample (batch_size 1)
    sent = _generations(clean)
    assert len(sent) == len(PROMPTS) and all(b["temperature"] == 0.0 for b in sent)
    extra = backend.describe().extra
    assert extra["server_model"] == SERVED and extra["system_fingerprint"].startswith("vllm-")


@vllm
def test_chat_endpoint_without_template_is_a_clear_error(clean: FaultProxy) -> None:
    backend = create_backend(_row(clean.url, endpoint="chat", max_retries=0))
    with pytest.raises(UserError, match=r"prompt 0 failed: HTTP 400: .*chat template"):
        backend.generate(PROMPTS[:1], GREEDY)


@vllm
def test_seeded_sampling_does_not_depend_on_concurrency_or_skip(clean: FaultProxy) -> None:
    settings = GenerationSettings(max_new_tokens=12, do_sample=True, temperature=1.0, seed=7)
    one = create_backend(_row(clean.url, max_concurrency=1)).generate(PROMPTS, settings)
    many = create_backend(_row(clean.url, max_concurrency=6, batch_size=3))
    assert many.generate(PROMPTS, settings) == one
    resumed = many.generate(PROMPTS, settings, skip={0, 1, 2})
    assert resumed[3:] == one[3:] and resumed[:3] == ["", "", ""]
    other = create_backend(_row(clean.url)).generate(PROMPTS, settings.model_copy(update={"seed": 8}))
    assert other != one


@vllm
def test_each_request_carries_its_examples_seed(clean: FaultProxy) -> None:
    settings = GenerationSettings(max_new_tokens=12, do_sample=True, temperature=1.0, seed=7)
    seeds = [example_seed(7, "en", str(i)) for i in range(len(PROMPTS))]
    backend = create_backend(_row(clean.url, max_concurrency=4))
    full = backend.generate(PROMPTS, settings, seeds=seeds)
    sent = {body["prompt"]: body["seed"] for body in _generations(clean)}
    assert [sent[p] for p in PROMPTS] == seeds
    for shard in (0, 1):  # two strided halves, as torchrun ranks get them
        assert backend.generate(PROMPTS[shard::2], settings, seeds=seeds[shard::2]) == full[shard::2]


@vllm
def test_cache_identity_is_the_served_model_not_the_url(clean: FaultProxy, server: str) -> None:
    identity = create_backend(_row(clean.url)).cache_identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity["model"] == SERVED and identity["endpoint"] == "completions"
    direct = create_backend(_row(server, max_concurrency=2, batch_size=3, max_retries=1))
    assert direct.cache_identity() == identity  # proxy or not, concurrency and retries are no identity
    assert clean.url not in json.dumps(identity) and server not in json.dumps(identity)
    for options in ({"endpoint": "chat"}, {"extra_body": {"repetition_penalty": 1.1}}, {"logprobs": False}):
        assert create_backend(_row(clean.url, **options)).cache_identity() != identity, options


@vllm
@pytest.mark.parametrize("bos_token", [None, "<|endoftext|>"])
def test_prompt_logprobs_equal_hf_nll(clean: FaultProxy, hf, bos_token: str | None) -> None:
    backend = create_backend(_row(clean.url, bos_token=bos_token))
    cases = [
        {},
        {"prepend_bos": False},
        {"contexts": ["The weather:", "Bob", "", "Hi"]},
        {"max_length": 12, "stride": 5},  # sliding windows
    ]
    for options in cases:
        got = backend.loglikelihood(TEXTS, per_token=True, **options)
        want = hf.loglikelihood(TEXTS, per_token=True, **options)
        for g, w in zip(got, want, strict=True):
            assert g.tokens == w.tokens, options
            assert math.isclose(g.nll, w.nll, rel_tol=1e-4, abs_tol=1e-6), (options, g.nll, w.nll)
    assert got[0].tokens > 12  # the windowed case really had several windows


@vllm
def test_max_length_beyond_the_echo_context_is_refused(clean: FaultProxy) -> None:
    backend = create_backend(_row(clean.url))
    with pytest.raises(UserError, match="between 2 and 127"):
        backend.loglikelihood(TEXTS, max_length=128)


@vllm
def test_faults_are_retried_and_results_equal_a_clean_run(clean: FaultProxy) -> None:
    reference = create_backend(_row(clean.url)).generate(PROMPTS, GREEDY)
    clean.reset()
    faults = ["429", "500", "drop", "slow", "badjson"]
    clean.script(COMPLETIONS, faults)
    backend = create_backend(
        _row(clean.url, max_concurrency=1, timeout=TIMEOUT_S, max_retries=5, backoff=0.05)
    )
    started = time.monotonic()
    texts = backend.generate(PROMPTS, GREEDY)
    elapsed = time.monotonic() - started
    assert texts == reference
    assert backend.stats.retries == len(faults), backend.stats.retried
    assert sum(clean.injected.values()) == len(faults) and clean.injected["429"] == 1
    assert clean.requests[COMPLETIONS] == len(PROMPTS) + len(faults)
    assert elapsed >= 1.0 + TIMEOUT_S  # Retry-After honoured, and the slow answer waited out to the timeout


@vllm
def test_on_error_record_gives_empty_predictions_and_says_which(clean: FaultProxy) -> None:
    reference = create_backend(_row(clean.url)).generate(PROMPTS, GREEDY)
    clean.reset()
    clean.script(COMPLETIONS, ["ok", "500", "500"])  # prompt 1 fails twice: max_retries 1
    backend = create_backend(
        _row(clean.url, max_concurrency=1, max_retries=1, backoff=0.01, on_error="record")
    )
    record = backend.describe()
    reported: dict[int, str] = {}
    recorded: list[int] = []

    def on_batch(indices: list[int], texts: list[str], tokens: int, *, failed: tuple[int, ...] = ()) -> None:
        reported.update(zip(indices, texts, strict=True))
        recorded.extend(failed)

    with pytest.warns(UserWarning, match=r"1 of 6 requests failed .*prompts \[1\]; prompt 1: HTTP 500"):
        texts = backend.generate(PROMPTS, GREEDY, on_batch=on_batch)
    assert texts == [reference[0], "", *reference[2:]]
    assert reported == dict(enumerate(texts))
    assert recorded == [1]  # logged, but marked so that no cache takes it
    assert record.extra["failed_samples"] == "1"  # the provenance handed out earlier is completed


@vllm
def test_on_error_fail_names_the_sample_and_keeps_finished_ones(clean: FaultProxy) -> None:
    reference = create_backend(_row(clean.url)).generate(PROMPTS, GREEDY)
    clean.reset()
    clean.script(COMPLETIONS, ["ok", "ok", "500", "500", "500"])
    backend = create_backend(_row(clean.url, max_concurrency=1, max_retries=2, backoff=0.01))
    reported: dict[int, str] = {}
    with pytest.raises(UserError) as error:
        backend.generate(PROMPTS, GREEDY, on_batch=lambda i, t, n: reported.update(zip(i, t, strict=True)))
    message = str(error.value)
    assert "\n" not in message
    assert "prompt 2 failed: HTTP 500: internal error (injected) (after 2 retries)" in message
    assert reported == {0: reference[0], 1: reference[1]}
    clean.reset()
    texts = backend.generate(PROMPTS, GREEDY, skip=set(reported))
    assert texts[2:] == reference[2:] and len(_generations(clean)) == len(PROMPTS) - 2


def _suite(tmp_path: Path, base_url: str, **options) -> Path:
    suite = {
        "name": "served",
        "models": [
            {
                "name": "served",
                "backend": "openai",
                "base_url": base_url,
                "model": SERVED,
                "max_concurrency": 1,
                "generation": {"max_new_tokens": 16},
                **options,
            }
        ],
        "tasks": [
            {
                "name": "en",
                "data": str(DEMO_EN),
                "prompt": "{prompt}",
                "references": ["reference"],
                "id_field": "id",
                "lang": "en",
            }
        ],
        "metrics": ["bleu", {"name": "perplexity", "target": "references", "context": "prompt"}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@vllm
def test_run_resume_and_the_key_never_written(
    clean: FaultProxy, hf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aigc_eval import api

    secret = "sk-test-0123456789-do-not-write"
    monkeypatch.setenv("AIGC_TEST_API_KEY", secret)
    suite = _suite(tmp_path, clean.url, api_key_env="AIGC_TEST_API_KEY", max_retries=1, backoff=0.01)
    n = 6
    clean.script(COMPLETIONS, ["ok", "ok", "ok", "500", "500"])  # the 4th sample fails: the run stops
    with pytest.raises(UserError, match="prompt 3 failed") as error:
        api.run(suite, output_dir=tmp_path / "reports", limit=n)
    run_dir = getattr(error.value, RUN_DIR_ATTRIBUTE)
    clean.reset()
    run = api.run(suite, output_dir=tmp_path / "reports", limit=n, resume=run_dir)
    assert len(_generations(clean)) == n - 3  # only the missing samples were sent
    assert clean.auth == {f"Bearer {secret}"}
    samples = run.samples()
    predictions = samples.drop_duplicates("id").sort_values("id")["prediction"].tolist()
    assert predictions == hf.generate(PROMPTS[:n], GREEDY)
    provenance = run.record.models["served"]
    assert provenance.backend == "openai" and provenance.extra["system_fingerprint"].startswith("vllm-")
    for file in Path(run.path).rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file
