"""Per-example seeds, ``device_map`` and cache identities of the ``hf`` backend, on the tiny GPT-2.

Samples must not depend on the batch size, the order of the prompts or how they are sharded (runs
are split into strided shards and merged by example index), and a cache keyed by the backend's
identity must never mix two models. The ``vllm`` and ``openai`` backends' seeds and identities are
tested on the real engine and server in their own files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from aigc_eval.backends.base import GenerationSettings, example_seed, prompt_seeds
from aigc_eval.backends.hf import HFBackend, HFRow, SeededSampler
from aigc_eval.config import parse_row
from aigc_eval.errors import UserError


def hf(path: Path | str, **options: object) -> HFBackend:
    return HFBackend(HFRow(name="m", path=str(path), **options))


PROMPTS = [
    "The cat",
    "My friend reads an old book and then",
    "A",
    "今天天气",
    "Every student walks past the quiet city while the old teacher",
    "学生们在读一本书",
    "The river",
    "The old teacher remembers",
    "小猫",
    "A small dog sees the green house and",
    "My friend",
]
SEEDS = [example_seed(7, "task", f"example-{i}") for i in range(len(PROMPTS))]
SAMPLE = GenerationSettings(
    max_new_tokens=12, do_sample=True, temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.2
)


@pytest.fixture(scope="module")
def single(tiny_lm_dir: Path) -> HFBackend:
    return hf(tiny_lm_dir, batch_size=1, dtype="float32")


@pytest.fixture(scope="module")
def reference(single: HFBackend) -> list[str]:
    """Each prompt sampled alone: what every other batching must reproduce."""
    return single.generate(PROMPTS, SAMPLE, seeds=SEEDS)


# -- the seed function -------------------------------------------------------------------------------


def test_example_seed_is_31_bits_and_depends_on_each_part() -> None:
    seeds = {example_seed(s, t, str(i)) for s in range(3) for t in ("", "a", "b") for i in range(100)}
    assert len(seeds) == 900 and all(0 <= s < 2**31 for s in seeds)
    assert example_seed(0, "a", "b") == example_seed(0, "a", "b")
    assert example_seed(0, "a:b", "c") != example_seed(0, "a", "b:c")  # the parts are kept apart
    assert example_seed(0, "", "中文") != example_seed(0, "", "中")


def test_default_seeds_come_from_positions_and_must_match_the_prompts() -> None:
    settings = GenerationSettings(seed=5)
    assert prompt_seeds(["x", "y"], settings, None) == [example_seed(5, "", "0"), example_seed(5, "", "1")]
    assert prompt_seeds(["x", "y"], settings, [3, 4]) == [3, 4]
    with pytest.raises(ValueError, match="1 seeds for 2 prompts"):
        prompt_seeds(["x", "y"], settings, [3])


# -- the sampler -------------------------------------------------------------------------------------


def test_sampler_rows_draw_from_their_own_generator_once_per_step() -> None:
    """Row 0 draws the same tokens and leaves its generator in the same state whatever its
    batch-mates' scores are (a finished row's included) and whether it has batch-mates at all."""
    torch.manual_seed(0)
    steps = [torch.randn(3, 50) for _ in range(6)]
    settings = GenerationSettings(do_sample=True, temperature=0.8, top_k=10, top_p=0.9)
    batched = SeededSampler([11, 12, 13], settings)
    alone = SeededSampler([11], settings)
    perturbed = SeededSampler([11, 99, 13], settings)
    ids = torch.zeros((3, 1), dtype=torch.long)
    for scores in steps:
        other = scores.clone()
        other[1] = 0.0  # a finished row: uniform scores, another seed
        together = batched(ids, scores.clone())
        solo = alone(ids[:1], scores[:1].clone())
        mixed = perturbed(ids, other)
        for out in (together, solo, mixed):
            assert (out[0] == 0).sum() == 1 and torch.isinf(out[0]).sum() == 49
        assert together[0].argmax() == solo[0].argmax() == mixed[0].argmax()
        assert together[2].argmax() == mixed[2].argmax()
    state = alone.generators[0].get_state()
    assert torch.equal(batched.generators[0].get_state(), state)
    assert torch.equal(perturbed.generators[0].get_state(), state)
    assert not torch.equal(batched.generators[1].get_state(), perturbed.generators[1].get_state())


def test_sampling_alone_equals_transformers_own_sampling(single: HFBackend, reference: list[str]) -> None:
    """At batch size 1 the sampler draws what ``do_sample=True`` draws after ``manual_seed(seed)``:
    same warpers, same order, repetition penalty before them."""
    tok, model = single.tokenizer, single.model
    for prompt, seed, text in zip(PROMPTS, SEEDS, reference, strict=True):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=12,
                do_sample=True,
                temperature=0.9,
                top_k=40,
                top_p=0.95,
                repetition_penalty=1.2,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        assert text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


# -- independence of batching, order and shards ------------------------------------------------------


@pytest.mark.parametrize("batch_size", [3, 16])
def test_samples_do_not_depend_on_the_batch_size(
    tiny_lm_dir: Path, reference: list[str], batch_size: int
) -> None:
    batched = hf(tiny_lm_dir, batch_size=batch_size, dtype="float32")
    assert batched.generate(PROMPTS, SAMPLE, seeds=SEEDS) == reference
    assert len(set(reference)) == len(PROMPTS)  # real samples, not one repeated text


def test_samples_do_not_depend_on_order_or_shards(tiny_lm_dir: Path, reference: list[str]) -> None:
    backend = hf(tiny_lm_dir, batch_size=3, dtype="float32")
    assert backend.generate(PROMPTS[::-1], SAMPLE, seeds=SEEDS[::-1]) == reference[::-1]
    for shard in (0, 1):  # two strided halves, as torchrun ranks get them
        assert backend.generate(PROMPTS[shard::2], SAMPLE, seeds=SEEDS[shard::2]) == reference[shard::2]


def test_other_seeds_draw_other_samples_and_greedy_ignores_seeds(
    single: HFBackend, reference: list[str]
) -> None:
    shifted = [example_seed(8, "task", f"example-{i}") for i in range(len(PROMPTS))]
    other = single.generate(PROMPTS, SAMPLE, seeds=shifted)
    assert sum(a != b for a, b in zip(other, reference, strict=True)) >= len(PROMPTS) - 2
    greedy = GenerationSettings(max_new_tokens=12)
    plain = single.generate(PROMPTS, greedy)
    assert (
        single.generate(PROMPTS, greedy, seeds=SEEDS)
        == plain
        == single.generate(PROMPTS, greedy, seeds=shifted)
    )


def test_resume_keeps_every_sample(tiny_lm_dir: Path, reference: list[str]) -> None:
    backend = hf(tiny_lm_dir, batch_size=4, dtype="float32")
    batches: list[list[int]] = []
    backend.generate(PROMPTS, SAMPLE, seeds=SEEDS, on_batch=lambda idx, *_: batches.append(idx))
    skip = set(batches[0]) | {batches[1][0]}  # batch 1 only partly done: it runs again whole
    resumed = backend.generate(PROMPTS, SAMPLE, seeds=SEEDS, skip=skip)
    for i, text in enumerate(resumed):
        assert text == ("" if i in batches[0] else reference[i])


def test_beam_sampling_is_seeded_per_example(tiny_lm_dir: Path, single: HFBackend) -> None:
    beams = GenerationSettings(max_new_tokens=8, num_beams=2, do_sample=True, temperature=1.5, top_k=0)
    prompts, seeds = PROMPTS[:5], SEEDS[:5]
    alone = single.generate(prompts, beams, seeds=seeds)
    assert hf(tiny_lm_dir, batch_size=4, dtype="float32").generate(prompts, beams, seeds=seeds) == alone
    tok = single.tokenizer
    for prompt, seed, text in zip(prompts, seeds, alone, strict=True):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = single.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=8,
                num_beams=2,
                do_sample=True,
                temperature=1.5,
                top_k=0,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        assert text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert single.generate(prompts, beams, seeds=[s + 1 for s in seeds]) != alone


# -- device_map --------------------------------------------------------------------------------------


def test_device_map_auto_loads_on_this_machine_and_generates_the_same(
    tiny_lm_dir: Path, single: HFBackend
) -> None:
    mapped = hf(tiny_lm_dir, device_map="auto", dtype="float32", batch_size=4)
    assert mapped.device == torch.device("cpu") and mapped.model.device == torch.device("cpu")
    assert mapped.describe().extra["device_map"] == '{"": "cpu"}'
    assert "device_map" not in single.describe().extra
    greedy = GenerationSettings(max_new_tokens=12)
    assert mapped.generate(PROMPTS, greedy) == single.generate(PROMPTS, greedy)
    assert mapped.generate(PROMPTS, SAMPLE, seeds=SEEDS) == single.generate(PROMPTS, SAMPLE, seeds=SEEDS)
    assert mapped.cache_identity() == single.cache_identity()


def test_device_map_and_device_are_exclusive_and_unset_rows_dump_as_before(tiny_lm_dir: Path) -> None:
    with pytest.raises(UserError, match=r"models\[0\]: .*device_map: 'auto' .* device: 'cpu'; remove one"):
        parse_row({"name": "m", "path": str(tiny_lm_dir), "device_map": "auto", "device": "cpu"}, "models[0]")
    row = parse_row({"name": "m", "path": str(tiny_lm_dir), "device_map": "auto"})
    assert row.model_dump(mode="json")["device_map"] == "auto"
    assert parse_row(row.model_dump(mode="json")) == row  # a dumped row reads back
    assert "device_map" not in parse_row({"name": "m", "path": str(tiny_lm_dir)}).model_dump(mode="json")


# -- cache identity ----------------------------------------------------------------------------------


def _with_template(source: Path, folder: Path, template: str) -> Path:
    shutil.copytree(source, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = template
    tok.save_pretrained(folder)
    return folder


def test_identity_is_stable_and_ignores_path_batch_size_and_device_index(
    tiny_lm_dir: Path, single: HFBackend, tmp_path: Path
) -> None:
    identity = single.cache_identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity["backend"] == "hf" and identity["device_type"] == "cpu"
    assert identity["dtype"] == "float32" and identity["weights_sha256"] == single.describe().weights_sha256
    assert all(identity[k] for k in ("config_sha256", "tokenizer_sha256", "transformers", "torch"))
    assert str(tiny_lm_dir) not in json.dumps(identity)
    copy = Path(shutil.copytree(tiny_lm_dir, tmp_path / "elsewhere" / "copy"))
    assert hf(tiny_lm_dir, batch_size=1, dtype="float32").cache_identity() == identity  # a second load
    assert hf(copy, batch_size=7, dtype="float32", device="cpu").cache_identity() == identity


def test_identity_changes_with_weights_and_dtype(
    tiny_lm_dir: Path, single: HFBackend, tmp_path: Path
) -> None:
    identity = single.cache_identity()
    changed = Path(shutil.copytree(tiny_lm_dir, tmp_path / "changed"))
    weights = load_file(changed / "model.safetensors")
    name = next(k for k in weights if k.endswith("ln_f.weight"))
    weights[name] = weights[name] + 1e-3
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    other = hf(changed, dtype="float32").cache_identity()
    assert {k for k in identity if identity[k] != other[k]} == {"weights_sha256"}
    half = hf(tiny_lm_dir, dtype="bfloat16").cache_identity()
    assert {k for k in identity if identity[k] != half[k]} == {"dtype"}
    assert hf(tiny_lm_dir, dtype="float32", fused_activations=False).cache_identity() != identity


def test_identity_of_chat_rows_holds_the_template_and_system_prompt(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    first = _with_template(
        tiny_lm_dir, tmp_path / "a", "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    second = _with_template(
        tiny_lm_dir, tmp_path / "b", "{% for m in messages %}>{{ m['content'] }}{% endfor %}"
    )
    assert hf(first).cache_identity() == hf(second).cache_identity()  # a template unused by the row
    chat_a, chat_b = hf(first, chat=True).cache_identity(), hf(second, chat=True).cache_identity()
    assert {k for k in chat_a if chat_a[k] != chat_b[k]} == {"chat_template_sha256"}
    assert hf(first, chat=True, system="Be brief.").cache_identity()["system"] == "Be brief."
    assert hf(first, chat=True).cache_identity() != hf(first).cache_identity()
