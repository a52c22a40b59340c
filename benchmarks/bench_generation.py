"""Generation speed: aigc-eval's batched ``HFBackend.generate`` vs a per-prompt loop vs lm-eval.

Run with the benchmark venv (see README.md):

    /work/bench-venv/bin/python benchmarks/bench_generation.py

Greedy decoding is used so the three outputs must agree token for token; the script reports how
many of the N continuations match exactly for each pair, and the ratios of the best wall times.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import _common
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aigc_eval.backends import scorer_for
from aigc_eval.backends.base import GenerationSettings


def per_prompt_loop(folder: Path, max_new_tokens: int, num_beams: int) -> Callable[[list[str]], list[str]]:
    """The seed document's recipe: encode and ``model.generate`` one prompt at a time."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def run(prompts: list[str]) -> list[str]:
        out = []
        for prompt in prompts:
            input_ids = tokenizer.encode(prompt, return_tensors="pt")
            ids = model.generate(
                input_ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams
            )
            out.append(tokenizer.decode(ids[0, input_ids.shape[1] :], skip_special_tokens=True))
        return out

    return run


def aigc(
    folder: Path, batch_size: int, max_new_tokens: int, num_beams: int
) -> Callable[[list[str]], list[str]]:
    backend = scorer_for(str(folder), device="cpu", batch_size=batch_size)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, num_beams=num_beams)
    return lambda prompts: backend.generate(prompts, settings)


def lm_eval_runner(
    folder: Path, batch_size: int, max_new_tokens: int, num_beams: int
) -> Callable[[list[str]], list[str]] | str:
    """lm-eval's ``HFLM.generate_until``; returns why not when lm-eval cannot be imported."""
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except Exception as err:  # any import failure is reported, the other comparisons still run
        return f"{type(err).__name__}: {err}"
    lm = HFLM(pretrained=str(folder), batch_size=batch_size, device="cpu", dtype="float32")
    eos_text = lm.tokenizer.decode([lm.tokenizer.eos_token_id], skip_special_tokens=False)
    gen_kwargs: dict[str, object] = {"until": [eos_text], "max_gen_toks": max_new_tokens, "do_sample": False}
    if num_beams > 1:
        gen_kwargs["num_beams"] = num_beams

    def run(prompts: list[str]) -> list[str]:
        requests = [
            # generate_until pops keys from its kwargs dict: give each request its own copy.
            Instance("generate_until", {}, (prompt, dict(gen_kwargs)), i)
            for i, prompt in enumerate(prompts)
        ]
        return lm.generate_until(requests, disable_tqdm=True)

    return run


def agreement(a: list[str], b: list[str]) -> tuple[int, list[int]]:
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return len(a) - len(differ), differ


def explain(name_a: str, a: str, name_b: str, b: str) -> str:
    """Say whether a mismatch is a truncation (stop handling) or a different token path."""
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    kind = (
        "one is a prefix of the other (stop/length handling)"
        if common == min(len(a), len(b))
        else (f"diverge after {common} characters (a different argmax: near-tie, batched vs single maths)")
    )
    return f"    {kind}\n      {name_a}: {a!r}\n      {name_b}: {b!r}"


def bench(args: argparse.Namespace, folder: Path, num_beams: int) -> list[list[object]]:
    prompts = _common.corpus_lines(args.prompts, start=args.start)
    runs: dict[str, Callable[[], list[str]]] = {}
    loaders: dict[str, Callable[[list[str]], list[str]] | str] = {
        f"aigc-eval HFBackend.generate (batch {args.batch_size})": aigc(
            folder, args.batch_size, args.max_new_tokens, num_beams
        ),
        "per-prompt model.generate loop (seed doc)": per_prompt_loop(folder, args.max_new_tokens, num_beams),
    }
    if not args.no_lm_eval:
        loaders[f"lm-eval HFLM.generate_until (batch {args.batch_size})"] = lm_eval_runner(
            folder, args.batch_size, args.max_new_tokens, num_beams
        )
    for name, runner in loaders.items():
        if isinstance(runner, str):
            print(f"SKIPPED {name}: lm-eval cannot be imported here: {runner}")
            continue
        runner(prompts[: min(4, len(prompts))])  # warm-up: first-call allocations and lazy imports
        runs[name] = lambda runner=runner: runner(prompts)

    print(f"\nnum_beams={num_beams}: timing {len(prompts)} prompts x {args.max_new_tokens} new tokens")
    times, outputs = _common.best_of(runs, args.repeats)
    names = list(runs)
    base = names[0]
    rows = []
    for name in names:
        t, ref = times[name], times[base]
        rows.append(
            [
                num_beams,
                name,
                f"{t.wall:.2f}",
                f"{t.cpu:.2f}",
                f"{len(prompts) / t.wall:.1f}",
                f"{t.wall / ref.wall:.2f}x",
                f"{t.cpu / ref.cpu:.2f}x",
            ]
        )

    print(f"\nOutputs (num_beams={num_beams}): exact matches out of {len(prompts)}")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            same, differ = agreement(outputs[a], outputs[b])
            print(f"  {a}  vs  {b}: {same}/{len(prompts)}")
            for k in differ[: args.show_mismatches]:
                print(f"    prompt #{k}: {prompts[k]!r}")
                print(explain(a, outputs[a][k], b, outputs[b][k]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=128, help="number of corpus lines used as prompts")
    parser.add_argument("--start", type=int, default=0, help="first corpus line")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds; the best is reported")
    parser.add_argument("--beams", type=int, default=0, help="also time beam search with this many beams")
    parser.add_argument("--no-lm-eval", action="store_true", help="skip lm-eval (not installed)")
    parser.add_argument("--show-mismatches", type=int, default=3)
    parser.add_argument("--layers", type=int, default=_common.ModelSize.n_layer)
    parser.add_argument("--width", type=int, default=_common.ModelSize.n_embd)
    parser.add_argument("--heads", type=int, default=_common.ModelSize.n_head)
    parser.add_argument("--context", type=int, default=_common.ModelSize.n_positions)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see _common.py)")
    args = parser.parse_args()
    _common.quiet_and_threads(args.threads)
    size = _common.ModelSize(args.layers, args.width, args.heads, args.context)

    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        folder = _common.build_model(Path(tmp), size)
        print(f"model: random-init GPT-2 {size}, vocab from {_common.tokenizer_dir().name}")
        print(_common.machine())
        rows = bench(args, folder, num_beams=1)
        if args.beams > 1:
            rows += bench(args, folder, num_beams=args.beams)

    print(
        f"\nGeneration, {args.prompts} prompts, max_new_tokens {args.max_new_tokens} "
        f"(best of {args.repeats}, {args.threads} torch thread(s))"
    )
    print("ratio = method time / aigc-eval time (higher = aigc-eval faster)")
    header = ["beams", "method", "wall s", "CPU s", "prompts/s", "wall ratio", "CPU ratio"]
    print(_common.table(header, rows))
    print(_common.machine())


if __name__ == "__main__":
    main()
