"""Shared fixtures: a tiny random-init GPT-2 with a locally trained tokenizer (nothing downloaded)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

SUBJECTS = ["The cat", "A small dog", "My friend", "The old teacher", "Every student", "The river"]
VERBS = ["reads", "sees", "writes about", "walks past", "remembers", "paints"]
OBJECTS = ["the green house", "a long letter", "the morning light", "an old book", "the quiet city"]
ZH_SUBJECTS = ["今天", "我的朋友", "老师", "小猫", "学生们"]
ZH_PREDICATES = ["天气很好", "在读一本书", "去了北京", "喜欢喝茶", "写了一封信", "看见了大海"]


def training_lines() -> list[str]:
    """A few hundred deterministic English and Chinese sentences."""
    english = [f"{s} {v} {o}." for s, v, o in itertools.product(SUBJECTS, VERBS, OBJECTS)]
    chinese = [f"{s}{p}。" for s, p in itertools.product(ZH_SUBJECTS, ZH_PREDICATES)]
    return english + chinese * 3


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a ByteLevel-BPE tokenizer and a 2-layer GPT-2 (64-token context), safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    # Tiny models run fastest on one thread; with two, CPU contention made generate() 20x slower here.
    torch.set_num_threads(1)
    specials = ["<s>", "</s>", "<pad>", "<unk>"]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(training_lines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=64,
    )
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=64,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    folder = tmp_path_factory.mktemp("tiny_lm")
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def plain_lm(tiny_lm_dir: Path):
    """The tiny model exactly as transformers loads it (no aigc-eval kernel swaps): the reference."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype="float32").eval()


V1_RUN = Path(__file__).parent / "assets" / "run_v1"


@pytest.fixture
def v1_run(tmp_path: Path) -> Path:
    """A copy of a real demo run folder written by the schema-1 version (features left out: 2.7 MB):
    old run folders must keep loading, comparing and reporting."""
    import shutil

    return Path(shutil.copytree(V1_RUN, tmp_path / "v1-run"))


@pytest.fixture(scope="session", autouse=True)
def private_session_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module- and session-scoped fixtures start before ``private_caches``: they get a private cache
    too, never the user's ~/.cache (whose entries another torch version or thread count wrote)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIGC_EVAL_CACHE_DIR", str(tmp_path_factory.mktemp("session-cache")))
        yield


@pytest.fixture(autouse=True)
def private_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets empty generation and feature caches (``AIGC_EVAL_CACHE_DIR``): no test sees
    another's cached generations, and none touches the user's ~/.cache. Tests about the caches set
    their own folder on top of this one."""
    monkeypatch.setenv("AIGC_EVAL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
