"""GPU throughput: aigc-eval's HF backend vs its vLLM backend vs raw ``vllm.LLM.generate``, batch sweep.

Prepared for a lent GPU (one H200: under 5 minutes with the defaults); needs torch with CUDA, vllm and
aigc-eval importable, and nothing from the network:

    python benchmarks/gpu_backends.py --out /tmp/gpu-backends          # JSON + markdown table there
    python benchmarks/gpu_backends.py --eager                          # no CUDA graphs (faster start)
    python benchmarks/gpu_backends.py --smoke                          # tiny model on the CPU: the plumbing

The model is built from a config (random init, seeded): a Llama of ~0.85B parameters (hidden 2048,
16 layers, GQA 16/4 heads, MLP 5632, a 32,000-word vocabulary) with a word-level tokenizer over that
vocabulary, so every id the random model emits decodes and the LM head costs what a real one does.
Prompts are seeded random word sequences. For each batch size B every method generates for 2*B
prompts in calls of B (the backends' ``batch_size``, raw vLLM given the same chunks) with greedy
decoding and ``max_new_tokens`` each; tokens/s counts generated tokens (the backends' own counts,
``len(token_ids)`` for raw vLLM) over the timed calls after one warm-up call. Each method runs in its
own process (one engine per process; vLLM does not free a GPU engine reliably in-process).

The bars of issue 11, printed as PASS/FAIL per batch size: the vLLM backend's tokens/s within 5% of
raw vLLM's (the toolkit adds no overhead), and the HF backend within 2x of the vLLM backend. Output
agreement (bf16: not required) is reported as exact-match counts.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METHODS = ("raw-vllm", "vllm-backend", "hf-backend")
SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"]


def build_model(folder: Path, smoke: bool, seed: int = 0) -> Path:
    """A seeded random-init Llama and a word-level tokenizer covering its whole vocabulary."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab_size = 512 if smoke else 32000
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"\u2581w{i}": i for i in range(len(SPECIALS), vocab_size)})
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # SentencePiece-style word pieces: HF's decode and vLLM's incremental detokenizer give the same text.
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Metaspace()
    context = 256 if smoke else 2048
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.model_max_length = context
    shape = (
        {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}
        if smoke
        else {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 16,
            "num_attention_heads": 16,
        }
    )
    config = LlamaConfig(
        **shape,
        num_key_value_heads=shape["num_attention_heads"] // 4,
        vocab_size=vocab_size,
        max_position_embeddings=context,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model = model.to(torch.float32 if smoke else torch.bfloat16).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    (folder / "params.txt").write_text(str(params))
    return folder


def make_prompts(count: int, vocab_size: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [
        " ".join(f"w{rng.randrange(len(SPECIALS), vocab_size)}" for _ in range(rng.randint(32, 64)))
        for _ in range(count)
    ]


def worker(args: argparse.Namespace) -> None:
    """One method over every batch size, in this process; writes ``{batch: figures}`` as JSON."""
    from aigc_eval.backends import create_backend
    from aigc_eval.backends.base import GenerationSettings
    from aigc_eval.config import parse_row

    folder, smoke = Path(args.model), args.smoke
    vocab_size = 512 if smoke else 32000
    dtype = "float32" if smoke else "bfloat16"
    batches = [int(b) for b in args.batches.split(",")]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    engine = {"max_model_len": args.max_model_len, "enforce_eager": args.eager or smoke}
    if not smoke:
        engine["gpu_memory_utilization"] = args.gpu_memory_utilization
    results: dict[str, Any] = {}
    llm, backends = None, {}
    for batch in batches:
        prompts = make_prompts(2 * batch + batch, vocab_size, seed=batch)  # one warm-up chunk, two timed
        chunks = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
        if args.method == "raw-vllm":
            import vllm

            if llm is None:
                llm = vllm.LLM(model=str(folder), dtype=dtype, seed=0, **engine)
            params = vllm.SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens)

            def call(chunk: list[str], llm: Any = llm, params: Any = params) -> tuple[list[str], int]:
                outs = llm.generate(chunk, params, use_tqdm=False)
                return [o.outputs[0].text for o in outs], sum(len(o.outputs[0].token_ids) for o in outs)
        else:
            kind = "vllm" if args.method == "vllm-backend" else "hf"
            options = engine if kind == "vllm" else {"device": "cpu" if smoke else "cuda"}
            row = parse_row(
                {
                    "name": kind,
                    "backend": kind,
                    "path": str(folder),
                    "dtype": dtype,
                    "batch_size": batch,
                    **options,
                }
            )
            # One model load for the whole sweep: only the per-call batch size changes between rows.
            if kind not in backends:
                backends[kind] = create_backend(row)
            backend = backends[kind]
            backend.batch_size = batch

            def call(chunk: list[str], backend: Any = backend) -> tuple[list[str], int]:
                counts: list[int] = []
                texts = backend.generate(chunk, settings, on_batch=lambda _i, _t, k: counts.append(k))
                return texts, sum(counts)

        call(chunks[0])  # warm-up: kernels, allocator, CUDA graphs for this batch shape
        sync()
        started = time.perf_counter()
        texts, tokens = [], 0
        for chunk in chunks[1:]:
            out, n = call(chunk)
            texts += out
            tokens += n
        sync()
        elapsed = time.perf_counter() - started
        results[str(batch)] = {
            "tokens": tokens,
            "seconds": elapsed,
            "tokens_per_s": tokens / elapsed,
            "texts": texts,
        }
        print(
            f"  {args.method} batch {batch}: {tokens} tokens in {elapsed:.2f} s "
            f"= {tokens / elapsed:.0f} tok/s"
        )
    Path(args.result).write_text(json.dumps(results))


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def markdown(batches: list[str], figures: dict[str, dict[str, Any]]) -> tuple[str, bool]:
    """The table and whether every bar passed."""
    lines = [
        "| batch | raw vLLM tok/s | vLLM backend tok/s | HF backend tok/s | backend / raw | HF / vLLM | "
        "bar: backend within 5% of raw | bar: HF within 2x | outputs backend = raw | outputs HF = vLLM |",
        "|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    passed = True
    for b in batches:
        raw, ours, hf = (figures[m].get(b) for m in METHODS)
        if raw is None or ours is None or hf is None:
            lines.append(f"| {b} | missing: a worker failed (see its log) | | | | | FAIL | FAIL | | |")
            passed = False
            continue
        overhead = ours["tokens_per_s"] / raw["tokens_per_s"]
        speed = hf["tokens_per_s"] / ours["tokens_per_s"]
        bar_a, bar_b = overhead >= 0.95, speed >= 0.5
        passed = passed and bar_a and bar_b
        same_raw = sum(x == y for x, y in zip(ours["texts"], raw["texts"], strict=True))
        same_hf = sum(x == y for x, y in zip(hf["texts"], ours["texts"], strict=True))
        n = len(ours["texts"])
        lines.append(
            f"| {b} | {raw['tokens_per_s']:.0f} | {ours['tokens_per_s']:.0f} | {hf['tokens_per_s']:.0f} | "
            f"{overhead:.3f} | {speed:.3f} | {'PASS' if bar_a else 'FAIL'} | {'PASS' if bar_b else 'FAIL'} | "
            f"{same_raw}/{n} | {same_hf}/{n} |"
        )
    return "\n".join(lines), passed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="gpu-backends", help="folder for gpu_backends.json and .md")
    parser.add_argument("--batches", default="1,8,32,128", help="batch sizes (comma-separated)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    parser.add_argument("--eager", action="store_true", help="enforce_eager (no CUDA graphs): quicker start")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny float32 model on the CPU (checks the script)"
    )
    parser.add_argument("--timeout", type=int, default=240, help="seconds per method's process")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        for name, value in {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "TORCHDYNAMO_DISABLE": "1",
            "VLLM_HOST_IP": "127.0.0.1",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }.items():
            os.environ.setdefault(name, value)
    if args.method:
        worker(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-backends-") as tmp:
        folder = build_model(Path(tmp) / "model", args.smoke)
        params = int((folder / "params.txt").read_text())
        print(
            f"model: random-init Llama, {params / 1e9:.3f}B parameters, "
            f"built in {time.perf_counter() - started:.0f} s"
        )
        for method in METHODS:
            result = Path(tmp) / f"{method}.json"
            command = [
                sys.executable,
                __file__,
                "--method",
                method,
                "--model",
                str(folder),
                "--result",
                str(result),
            ]
            command += ["--batches", args.batches, "--max-new-tokens", str(args.max_new_tokens)]
            command += ["--max-model-len", str(args.max_model_len)]
            command += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
            command += ["--eager"] * args.eager + ["--smoke"] * args.smoke
            print(f"{method}:", flush=True)
            try:
                done = subprocess.run(command, timeout=args.timeout, cwd=REPO)
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
            figures[method] = json.loads(result.read_text()) if result.exists() else {}
            if code != 0:
                print(f"  {method} ended with {code}; its missing batches count as failed bars")
    batches = args.batches.split(",")
    table, passed = markdown(batches, figures)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    header = (
        f"GPU backends benchmark on {device}: random-init Llama {params / 1e9:.2f}B, "
        f"{'float32' if args.smoke else 'bfloat16'}, greedy, max_new_tokens {args.max_new_tokens}, "
        f"2 x batch prompts timed per row, {'eager' if args.eager or args.smoke else 'CUDA graphs'}; "
        f"total {time.perf_counter() - started:.0f} s"
    )
    (out / "gpu_backends.md").write_text(f"{header}\n\n{table}\n")
    summary = {
        "header": header,
        "params": params,
        "batches": batches,
        "passed": passed,
        "figures": {
            m: {b: {k: v for k, v in f.items() if k != "texts"} for b, f in r.items()}
            for m, r in figures.items()
        },
    }
    (out / "gpu_backends.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\n{header}\n\n{table}\n\nbars: {'ALL PASS' if passed else 'SOME FAIL'}; "
        f"wrote {out}/gpu_backends.{{json,md}}"
    )


if __name__ == "__main__":
    main()
