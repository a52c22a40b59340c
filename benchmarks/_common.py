"""Shared pieces of the benchmarks: a seeded local model, the demo corpus, timing and tables.

Every benchmark builds its own random-init GPT-2 in a temp folder so nothing touches the hub and
runs are reproducible; speed does not depend on whether the weights are trained.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import transformers
from transformers import AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "suites" / "data" / "demo_corpus.txt"
# Prefer the trained demo model's tokenizer when it exists; both share the demo vocabulary.
MODELS = REPO / "suites" / "models"
TOKENIZER_DIRS = [MODELS / "demo-gpt2", MODELS / "demo-gpt2-untrained"]
T = TypeVar("T")


@dataclass(frozen=True)
class ModelSize:
    """GPT-2 shape; the default is realistic in depth/width yet fast enough for 2 CPU cores."""

    n_layer: int = 6
    n_embd: int = 384
    n_head: int = 6
    n_positions: int = 256
    # 0: the tokenizer's own size. Larger pads the embedding/LM head to a real model's vocabulary
    # (ids the tokenizer never emits), so the LM head and log-softmax cost what they would there.
    vocab_size: int = 0


def tokenizer_dir() -> Path:
    for folder in TOKENIZER_DIRS:
        if (folder / "tokenizer.json").exists():
            return folder
    raise SystemExit(f"no demo tokenizer found in {', '.join(map(str, TOKENIZER_DIRS))}")


def build_model(folder: Path, size: ModelSize, seed: int = 0) -> Path:
    """Save a seeded random-init GPT2LMHeadModel plus the demo tokenizer to ``folder``.

    bos/eos/pad ids are set explicitly (GPT-2 defaults are 50256, outside this vocabulary) and the
    generation config carries them, because transformers 5 ignores generation fields in config.json.
    """
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    tokenizer.model_max_length = size.n_positions
    bos = tokenizer.bos_token_id
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = GPT2Config(
        vocab_size=max(size.vocab_size, len(tokenizer)),
        n_layer=size.n_layer,
        n_embd=size.n_embd,
        n_head=size.n_head,
        n_positions=size.n_positions,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def corpus_lines(count: int, start: int = 0) -> list[str]:
    """``count`` non-empty lines of the English + Chinese demo corpus, from ``start``."""
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    if start + count > len(lines):
        raise SystemExit(f"{CORPUS} has {len(lines)} lines; asked for {start + count}")
    return lines[start : start + count]


@dataclass(frozen=True)
class Timing:
    """Best wall and CPU seconds of one method.

    CPU seconds (``time.process_time``, all threads of this process) are what the method cost; on
    a shared machine wall time also counts the time other processes held the cores. With one torch
    thread the two agree on a quiet machine, so ratios of CPU seconds are the steadier figure.
    """

    wall: float
    cpu: float


def best_of(runs: dict[str, Callable[[], T]], repeats: int) -> tuple[dict[str, Timing], dict[str, T]]:
    """Best wall and CPU time of each callable over ``repeats`` rounds, interleaved so load drift
    hits all alike; the minimum is the least disturbed run. The last result of each is returned.
    """
    wall = {name: float("inf") for name in runs}
    cpu = {name: float("inf") for name in runs}
    results: dict[str, T] = {}
    for round_ in range(repeats):
        for name, run in runs.items():
            begin, begin_cpu = time.perf_counter(), time.process_time()
            results[name] = run()
            elapsed, used = time.perf_counter() - begin, time.process_time() - begin_cpu
            wall[name] = min(wall[name], elapsed)
            cpu[name] = min(cpu[name], used)
            print(
                f"  round {round_ + 1}/{repeats} {name}: {elapsed:.2f} s wall, {used:.2f} s CPU", flush=True
            )
    return {name: Timing(wall[name], cpu[name]) for name in runs}, results


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (also valid Markdown)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def quiet_and_threads(threads: int) -> None:
    """Silence load/save progress bars, and pin torch's thread count.

    On a shared 2-core machine two OpenMP threads competing with other processes ran 5-12x slower
    and erratically (measured: 1.9 s vs 8-24 s for the same batch), so one thread is the default.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)


def silence_lm_eval_progress() -> None:
    """lm-eval's loglikelihood_rolling passes ``disable=False`` to tqdm itself; force bars off."""
    import lm_eval.models.huggingface as lm_hf
    from tqdm import tqdm

    def quiet(*args: object, **kwargs: object) -> tqdm:
        kwargs["disable"] = True
        return tqdm(*args, **kwargs)

    lm_hf.tqdm = quiet


def machine() -> str:
    """What the numbers were measured on: versions, threads and load (the machine is shared)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {load}"
    )
