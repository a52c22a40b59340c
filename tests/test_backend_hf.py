"""HFBackend against plain transformers calls on a tiny local GPT-2."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer
from transformers.activations import GELUTanh, NewGELUActivation

from aigc_eval.backends import create_backend, scorer_for
from aigc_eval.backends import hf as hf_module
from aigc_eval.backends.base import GenerationSettings
from aigc_eval.backends.hf import HFBackend, HFRow
from aigc_eval.errors import UserError
from aigc_eval.record import Provenance


def hf(path: Path | str, **options: object) -> HFBackend:
    """An HFBackend built from its row, as ``create_backend`` builds a suite's."""
    return HFBackend(HFRow(name="m", path=str(path), **options))


PROMPTS = [
    "The cat",
    "My friend reads an old book and then",
    "A",
    "今天天气",
    "Every student walks past the quiet city while the old teacher",
    "学生们在读一本书",
    "The river",
]
GREEDY = GenerationSettings(max_new_tokens=12)


@pytest.fixture(scope="module")
def backend(tiny_lm_dir: Path) -> HFBackend:
    return hf(str(tiny_lm_dir), batch_size=4)


@pytest.fixture(scope="module")
def unbatched(tiny_lm_dir: Path) -> HFBackend:
    return hf(str(tiny_lm_dir), batch_size=1)


@pytest.fixture(scope="module")
def greedy_reference(unbatched: HFBackend) -> list[str]:
    return unbatched.generate(PROMPTS, GREEDY)


# -- generation ------------------------------------------------------------------------------------


def test_batched_greedy_equals_unbatched(backend: HFBackend, greedy_reference: list[str]) -> None:
    out = backend.generate(PROMPTS, GREEDY)
    assert out == greedy_reference
    assert all(len(text) > 0 for text in out)


def test_beam_search_returns_only_the_continuation(unbatched: HFBackend, backend: HFBackend) -> None:
    settings = GenerationSettings(max_new_tokens=8, num_beams=3, early_stopping=True)
    prompts = ["The cat", "My friend reads an old book and then"]
    out = unbatched.generate(prompts, settings)
    tok, model = unbatched.tokenizer, unbatched.model
    for prompt, text in zip(prompts, out, strict=True):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        full = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            num_beams=3,
            early_stopping=True,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )[0]
        assert tok.decode(full, skip_special_tokens=True) == prompt + text
        assert text == tok.decode(full[ids.shape[1] :], skip_special_tokens=True)
    assert len(backend.generate(PROMPTS, settings)) == len(PROMPTS)


def test_sampling_is_seeded_per_example(backend: HFBackend) -> None:
    """Batch-size, order and shard independence: tests/test_backend_seeds.py."""
    settings = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=0.9, top_p=0.95, seed=7)
    first = backend.generate(PROMPTS, settings)
    assert backend.generate(PROMPTS, settings) == first
    other = backend.generate(PROMPTS, GenerationSettings(max_new_tokens=10, do_sample=True, seed=8))
    assert other != first
    # A resumed run skips the first batch; every sample after it is the same text.
    batches: list[list[int]] = []
    backend.generate(PROMPTS, settings, on_batch=lambda idx, texts, _tokens: batches.append(idx))
    resumed = backend.generate(PROMPTS, settings, skip=set(batches[0]))
    assert [resumed[i] for i in range(len(PROMPTS)) if i not in batches[0]] == [
        first[i] for i in range(len(PROMPTS)) if i not in batches[0]
    ]


def test_stop_strings_cut_the_output(backend: HFBackend, greedy_reference: list[str]) -> None:
    stops = (greedy_reference[0][3:5], greedy_reference[3][2:4])
    out = backend.generate(PROMPTS, GenerationSettings(max_new_tokens=12, stop=stops))
    for full, cut in zip(greedy_reference, out, strict=True):
        hits = [full.find(s) for s in stops if s in full]
        assert cut == (full[: min(hits)] if hits else full)
        assert not any(s in cut for s in stops)
    assert out[0] == greedy_reference[0][: greedy_reference[0].find(stops[0])]


def test_skip_and_on_batch(tiny_lm_dir: Path, greedy_reference: list[str]) -> None:
    backend = hf(str(tiny_lm_dir), batch_size=2)
    calls: list[tuple[list[int], list[str]]] = []
    out = backend.generate(PROMPTS, GREEDY, on_batch=lambda idx, texts, _tokens: calls.append((idx, texts)))
    assert out == greedy_reference
    assert sorted(i for idx, _ in calls for i in idx) == list(range(len(PROMPTS)))
    assert [len(idx) for idx, _ in calls] == [2, 2, 2, 1]
    lengths = [len(backend.tokenizer(p)["input_ids"]) for p in PROMPTS]
    first = sorted((lengths[i] for i in calls[0][0]), reverse=True)
    assert first == sorted(lengths, reverse=True)[:2]  # longest prompts come first
    for idx, texts in calls:
        assert texts == [greedy_reference[i] for i in idx]

    # Batch 0 fully done is skipped; batch 1 only partly done runs again whole.
    skip = set(calls[0][0]) | {calls[1][0][0]}
    resumed_calls: list[list[int]] = []
    resumed = backend.generate(PROMPTS, GREEDY, skip=skip, on_batch=lambda idx, *_: resumed_calls.append(idx))
    assert resumed_calls == [idx for idx, _ in calls[1:]]
    for i in range(len(PROMPTS)):
        assert resumed[i] == ("" if i in calls[0][0] else greedy_reference[i])


def test_chat_template_is_applied(tiny_lm_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "chat_lm"
    shutil.copytree(tiny_lm_dir, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    tok.save_pretrained(folder)
    chat = hf(str(folder), chat=True, system="Be brief.")
    plain = hf(str(folder))
    rendered = "<s>system: Be brief.\n<s>user: The cat\nassistant:"
    assert chat.generate(["The cat"], GREEDY) == plain.generate([rendered], GREEDY)
    assert chat.generate(["The cat"], GREEDY) != plain.generate(["The cat"], GREEDY)
    with pytest.raises(UserError, match="no chat template"):
        hf(str(tiny_lm_dir), chat=True)


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory (injected)"), RuntimeError("MPS backend out of memory")],
)
def test_out_of_memory_batches_are_split(
    tiny_lm_dir: Path, greedy_reference: list[str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    backend = hf(str(tiny_lm_dir), batch_size=4)
    real = backend.model.generate
    sizes: list[int] = []

    def flaky(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if sizes[-1] > 2:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.model, "generate", flaky)
    calls: list[list[int]] = []
    assert backend.generate(PROMPTS, GREEDY, on_batch=lambda idx, *_: calls.append(idx)) == greedy_reference
    assert sizes == [4, 2, 2, 3, 1, 2]
    assert [len(idx) for idx in calls] == [4, 3]  # one report per batch, however it was split


def test_out_of_memory_on_a_single_prompt_is_raised(
    tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = hf(str(tiny_lm_dir), batch_size=4)

    def always_oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(backend.model, "generate", always_oom)
    with pytest.raises(torch.OutOfMemoryError):
        backend.generate(PROMPTS[:3], GREEDY)


def test_other_errors_are_not_retried(tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = hf(str(tiny_lm_dir), batch_size=4)
    sizes: list[int] = []

    def broken(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(backend.model, "generate", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        backend.generate(PROMPTS, GREEDY)
    assert sizes == [4]


# -- loading and provenance ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["./no/such/model", "/tmp/no-such-model-dir", "~/missing", "a/b/c"])
def test_missing_local_folder_is_a_user_error(path: str) -> None:
    with pytest.raises(UserError, match=r"does not exist; fix `path`, or give a hub id") as info:
        hf(path)
    assert repr(path) in str(info.value)


def test_unloadable_hub_id_is_a_one_line_user_error() -> None:
    with pytest.raises(UserError, match="cannot load model 'no-such-org/no-such-model'") as info:
        hf("no-such-org/no-such-model")
    assert "\n" not in str(info.value)


def test_bad_options_are_user_errors(tiny_lm_dir: Path) -> None:
    """Options are validated by the row model, as a suite's ``models[i]`` is."""
    with pytest.raises(UserError, match=r"dtype: Input should be 'auto', 'float32'"):
        scorer_for(str(tiny_lm_dir), dtype="float8")
    with pytest.raises(UserError, match="batch_size: Input should be greater than or equal to 1"):
        scorer_for(str(tiny_lm_dir), batch_size=0)
    known = "hf, images, openai, vllm"
    with pytest.raises(UserError, match=rf"^unknown backend 'vllmm'; known backends: {known}$"):
        scorer_for(str(tiny_lm_dir), "vllmm")
    with pytest.raises(UserError, match="batchsize: unknown key"):
        scorer_for(str(tiny_lm_dir), batchsize=2)


def test_create_backend_and_describe(tiny_lm_dir: Path) -> None:
    backend = create_backend(HFRow(name="m", path=str(tiny_lm_dir), dtype="float32", device="cpu"))
    assert isinstance(backend, HFBackend)
    expected_sha = hashlib.sha256((tiny_lm_dir / "model.safetensors").read_bytes()).hexdigest()
    assert backend.describe() == Provenance(
        backend="hf",
        model=str(tiny_lm_dir),
        revision=None,
        weights_sha256=expected_sha,
        dtype="float32",
        device="cpu",
        context_length=64,
        extra={
            "fused_activations": "2",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    )
    assert backend.tokenizer.padding_side == "left"
    assert backend.model.dtype == torch.float32


def test_explicit_dtype_is_honoured(tiny_lm_dir: Path) -> None:
    backend = hf(str(tiny_lm_dir), dtype="bfloat16", device="cpu")
    assert backend.model.dtype == torch.bfloat16
    assert backend.describe().dtype == "bfloat16"


# -- log-likelihood --------------------------------------------------------------------------------


def reference_nll(model: torch.nn.Module, seq: list[int], context_start) -> float:
    """Sum over t >= 1 of -log p(seq[t] | seq[context_start(t):t]), one unbatched forward per token."""
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(seq)):
            logits = model(torch.tensor([seq[context_start(t) : t]])).logits[0, -1]
            total -= torch.log_softmax(logits.double(), dim=-1)[seq[t]].item()
    return total


def window_start(max_length: int, step: int):
    """Windows start ``step`` apart; token t >= max_length is in window (t - max_length) // step + 1."""

    def start(t: int) -> int:
        return 0 if t < max_length else ((t - max_length) // step + 1) * step

    return start


def hf_docs_recipe(model: torch.nn.Module, seq: list[int], max_length: int, stride: int) -> float:
    """The transformers docs' "perplexity of fixed-length models" loop, verbatim but for the token
    count (``labels[:, 1:] != -100``: the docs' "valid labels minus one" is right for window one only)."""
    ids = torch.tensor([seq])
    nll_sum, prev_end_loc = 0.0, 0
    for begin_loc in range(0, ids.size(1), stride):
        end_loc = min(begin_loc + max_length, ids.size(1))
        trg_len = end_loc - prev_end_loc
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        nll_sum += loss.item() * int((target_ids[:, 1:] != -100).sum())
        prev_end_loc = end_loc
        if end_loc == ids.size(1):
            break
    return nll_sum


TEXTS = [
    "The cat reads a long letter.",
    "今天天气很好。我的朋友喜欢喝茶。",
    "",
    "A",
    "My friend remembers the morning light, and the old teacher paints the quiet city.",
]


def text_ids(backend: HFBackend, text: str) -> list[int]:
    return backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_loglikelihood_matches_per_token_reference(backend: HFBackend, plain_lm: torch.nn.Module) -> None:
    assert len(text_ids(backend, "A")) == 1
    got = backend.loglikelihood(TEXTS)
    bos = backend.tokenizer.bos_token_id
    for text, scored in zip(TEXTS, got, strict=True):
        ids = text_ids(backend, text)
        assert scored.tokens == len(ids)
        expected = reference_nll(plain_lm, [bos, *ids], lambda t: 0)
        assert scored.nll == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert got[2].nll == 0.0 and got[2].tokens == 0


def test_loglikelihood_without_bos_leaves_the_first_token_unscored(
    backend: HFBackend, plain_lm: torch.nn.Module
) -> None:
    got = backend.loglikelihood(TEXTS, prepend_bos=False)
    for text, scored in zip(TEXTS, got, strict=True):
        ids = text_ids(backend, text)
        assert scored.tokens == max(len(ids) - 1, 0)
        assert scored.nll == pytest.approx(reference_nll(plain_lm, ids, lambda t: 0), rel=1e-4, abs=1e-6)


LONG = " ".join(TEXTS) * 3


@pytest.mark.parametrize(("max_length", "stride"), [(64, 16), (32, 10), (64, None), (20, 20)])
def test_sliding_windows_score_every_token_once(
    backend: HFBackend, plain_lm: torch.nn.Module, max_length: int, stride: int | None
) -> None:
    ids = text_ids(backend, LONG)
    seq = [backend.tokenizer.bos_token_id, *ids]
    assert len(seq) > 2 * 64
    [scored] = backend.loglikelihood([LONG], max_length=max_length, stride=stride)
    assert scored.tokens == len(ids)
    # stride defaults to max_length: disjoint windows, each reusing one token as context.
    step = min(stride or max_length, max_length - 1)
    expected = reference_nll(plain_lm, seq, window_start(max_length, step))
    assert scored.nll == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("max_length", "stride"), [(64, 32), (32, 10), (48, 47)])
def test_sliding_windows_equal_the_transformers_docs_recipe(
    backend: HFBackend, plain_lm: torch.nn.Module, max_length: int, stride: int
) -> None:
    texts = [LONG, LONG[:200], TEXTS[1]]
    got = backend.loglikelihood(texts, max_length=max_length, stride=stride)
    for text, scored in zip(texts, got, strict=True):
        seq = [backend.tokenizer.bos_token_id, *text_ids(backend, text)]
        assert scored.tokens == len(seq) - 1
        assert scored.nll == pytest.approx(hf_docs_recipe(plain_lm, seq, max_length, stride), rel=1e-5)


def test_per_token_nll_is_each_tokens_own_in_text_order(
    backend: HFBackend, plain_lm: torch.nn.Module
) -> None:
    texts = [LONG, *TEXTS]
    plain = backend.loglikelihood(texts, max_length=32, stride=10)
    got = backend.loglikelihood(texts, max_length=32, stride=10, per_token=True)
    start = window_start(32, 10)
    for text, scored, summed in zip(texts, got, plain, strict=True):
        seq = [backend.tokenizer.bos_token_id, *text_ids(backend, text)]
        with torch.no_grad():
            logits = [plain_lm(torch.tensor([seq[start(t) : t]])).logits[0, -1] for t in range(1, len(seq))]
        expected = [-torch.log_softmax(x.double(), -1)[seq[t]].item() for t, x in enumerate(logits, 1)]
        assert scored.token_nll == pytest.approx(expected, rel=1e-4, abs=1e-5)
        assert len(scored.token_nll) == scored.tokens == summed.tokens
        assert sum(scored.token_nll) == pytest.approx(summed.nll, rel=1e-9)
    assert plain[0].token_nll is None and got[3].token_nll == ()  # TEXTS[2] is empty


def test_long_and_short_texts_batch_together(backend: HFBackend, unbatched: HFBackend) -> None:
    texts = [LONG, *TEXTS, LONG[:150]]
    batched = backend.loglikelihood(texts, max_length=32, stride=8)
    alone = [unbatched.loglikelihood([t], max_length=32, stride=8)[0] for t in texts]
    for a, b in zip(batched, alone, strict=True):
        assert a.tokens == b.tokens
        assert a.nll == pytest.approx(b.nll, rel=1e-4, abs=1e-6)
    assert not any(math.isnan(s.nll) for s in batched)


def test_fused_activations_match_transformers_own(tiny_lm_dir: Path, backend: HFBackend) -> None:
    """GPT-2's composed gelu_new becomes PyTorch's fused tanh-GELU: same NLL up to float rounding."""
    assert backend.fused_activations == 2
    assert all(isinstance(block.mlp.act, GELUTanh) for block in backend.model.transformer.h)
    plain = hf(str(tiny_lm_dir), dtype="float32", device="cpu", fused_activations=False)
    assert plain.fused_activations == 0
    assert all(isinstance(block.mlp.act, NewGELUActivation) for block in plain.model.transformer.h)
    unloaded = hf(str(tiny_lm_dir), dtype="float32", device="cpu")  # counted before any weight is read
    assert unloaded.fused_activations == 2 and unloaded._model is None
    texts = [LONG, *TEXTS]
    for fused, exact in zip(
        backend.loglikelihood(texts, 32, 8), plain.loglikelihood(texts, 32, 8), strict=True
    ):
        assert fused.tokens == exact.tokens
        assert fused.nll == pytest.approx(exact.nll, rel=1e-5, abs=1e-6)


def test_an_architecture_without_a_meta_skeleton_is_counted_on_the_model(
    tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the meta-device skeleton cannot be built, the count comes from loading the model."""

    def cannot_build(*_args: object) -> int:
        raise RuntimeError("this architecture does not support the meta device")

    monkeypatch.setattr(hf_module, "_fusable_activations", cannot_build)
    backend = hf(str(tiny_lm_dir), dtype="float32", device="cpu")
    assert backend.fused_activations == 2 and backend._model is not None


def test_full_logits_fallback_equals_scored_positions_only(tiny_lm_dir: Path, backend: HFBackend) -> None:
    """Models without ``logits_to_keep`` get full logits sliced to the scored positions: same NLL."""
    fallback = hf(str(tiny_lm_dir), dtype="float32", device="cpu", batch_size=4)
    fallback._keeps_logits = False
    texts = [LONG, *TEXTS, LONG[:150]]
    kept = backend.loglikelihood(texts, max_length=32, stride=8)
    for a, b in zip(kept, fallback.loglikelihood(texts, max_length=32, stride=8), strict=True):
        assert a.tokens == b.tokens
        assert a.nll == pytest.approx(b.nll, rel=1e-6, abs=1e-7)


def test_loglikelihood_rejects_windows_beyond_the_model(backend: HFBackend) -> None:
    with pytest.raises(UserError, match="max_length 65"):
        backend.loglikelihood(["x"], max_length=65)
    with pytest.raises(UserError, match="max_length 1"):
        backend.loglikelihood(["x"], max_length=1)
