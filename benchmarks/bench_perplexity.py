"""Perplexity speed and agreement: aigc-eval ``HFBackend.loglikelihood`` vs the HF docs recipe vs lm-eval.

Run with the benchmark venv (see README.md):

    /work/bench-venv/bin/python benchmarks/bench_perplexity.py

All methods score every text token after a BOS prefix (aigc-eval ``prepend_bos=True``), so the
token-weighted perplexities ``exp(sum NLL / sum tokens)`` are directly comparable. Texts are short
corpus lines plus long texts (joined lines) that exceed the context and need sliding windows; they
are shuffled with a fixed seed so lengths are mixed, as in a real data set.

aigc-eval and the HF recipe use max_length = context and stride = context / 2 (the same windows,
so the same numbers). lm-eval's ``loglikelihood_rolling`` has no stride (disjoint windows), so
aigc-eval is also timed at stride = context (its default), which buys the same model work; the
table gives both ratios. A third aigc-eval row keeps the model exactly as transformers loads it
(``fused_activations=False``) to show what the fused tanh-GELU contributes.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import _common
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aigc_eval.backends import scorer_for
from aigc_eval.backends.hf import _width_batches, _windows

# Per text: (summed NLL in nats, scored tokens).
Scores = list[tuple[float, int]]


def aigc(
    folder: Path, batch_size: int, max_length: int, stride: int, fused_activations: bool = True
) -> Callable[[list[str]], Scores]:
    backend = scorer_for(
        str(folder), device="cpu", batch_size=batch_size, fused_activations=fused_activations
    )

    def run(texts: list[str]) -> Scores:
        out = backend.loglikelihood(texts, max_length=max_length, stride=stride, prepend_bos=True)
        return [(r.nll, r.tokens) for r in out]

    return run


def hf_docs_recipe(folder: Path, max_length: int, stride: int) -> Callable[[list[str]], Scores]:
    """The transformers docs "perplexity of fixed-length models" loop, per text and per window.

    Two changes only, both for comparability: the BOS id is put before each text (so its first
    token is scored, as with aigc-eval's ``prepend_bos``), and the scored-token count is
    ``(labels[:, 1:] != -100)`` instead of the docs' "valid labels minus one", which is right only
    for the first window (environment notes).
    """
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    bos = tokenizer.bos_token_id

    def one(text: str) -> tuple[float, int]:
        ids = torch.tensor([[bos, *tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]]])
        seq_len = ids.size(1)
        nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
        for begin_loc in range(0, seq_len, stride):
            end_loc = min(begin_loc + max_length, seq_len)
            trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
            input_ids = ids[:, begin_loc:end_loc]
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            with torch.no_grad():
                loss = model(input_ids, labels=target_ids).loss
            num_loss_tokens = int((target_ids[:, 1:] != -100).sum())
            nll_sum += loss.item() * num_loss_tokens
            n_tokens += num_loss_tokens
            prev_end_loc = end_loc
            if end_loc == seq_len:
                break
        return nll_sum, n_tokens

    return lambda texts: [one(t) for t in texts]


def lm_eval_rolling(
    folder: Path, batch_size: int, bos_in_tokenizer: bool
) -> Callable[[list[str]], Scores] | str:
    """lm-eval ``HFLM.loglikelihood_rolling``; returns why not when lm-eval cannot be imported.

    It returns one summed log-likelihood per text and has no stride: windows are disjoint, each
    predicting up to ``max_length`` tokens. It puts ``prefix_token_id`` (BOS) before each text itself,
    so ``add_bos_token=False`` stops the tokenizer adding a second one (``bos_in_tokenizer=True``
    keeps lm-eval's default, which scores BOS-after-BOS as an extra token for this tokenizer).
    The token count is the text's own tokens (+1 when the tokenizer added its BOS).
    """
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except Exception as err:  # any import failure is reported, the other comparisons still run
        return f"{type(err).__name__}: {err}"
    _common.silence_lm_eval_progress()
    extra = {} if bos_in_tokenizer else {"add_bos_token": False}
    lm = HFLM(pretrained=str(folder), batch_size=batch_size, device="cpu", dtype="float32", **extra)

    def run(texts: list[str]) -> Scores:
        requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
        lls = lm.loglikelihood_rolling(requests, disable_tqdm=True)
        return [(-ll, len(lm.tok_encode(t))) for ll, t in zip(lls, texts, strict=True)]

    return run


def make_texts(short: int, long: int, join: int, seed: int) -> list[str]:
    lines = _common.corpus_lines(short + long * join)
    texts = lines[:short]
    rest = lines[short:]
    texts += [" ".join(rest[k * join : (k + 1) * join]) for k in range(long)]
    random.Random(seed).shuffle(texts)
    return texts


def _batched_positions(widths: list[int], batch_size: int) -> int:
    """Positions computed when consecutive windows are batched and right-padded to the longest."""
    return sum(
        max(widths[i : i + batch_size]) * len(widths[i : i + batch_size])
        for i in range(0, len(widths), batch_size)
    )


def positions(lengths: list[int], max_length: int, stride: int, batch_size: int) -> dict[str, int]:
    """Token positions each method runs through the model, padding included: the work it pays for.

    Derived from each method's own windowing and batching rules; ``lengths`` are text tokens
    without the BOS.
    """
    seqs = [list(range(n + 1)) for n in lengths]  # BOS + text: only the lengths matter here

    def aigc(step: int) -> int:
        windows = sorted(
            ((0, ids) for seq in seqs for ids, _ in _windows(seq, max_length, step)), key=lambda w: -len(w[1])
        )
        return sum(len(batch[0][1]) * len(batch) for batch in _width_batches(windows, batch_size))

    hf = 0
    for seq in seqs:  # the docs loop: windows start every `stride` tokens; the last one is cut short
        for begin in range(0, len(seq), stride):
            end = min(begin + max_length, len(seq))
            hf += end - begin
            if end == len(seq):
                break
    out = {"aigc": aigc(stride), "aigc_full": aigc(max_length), "hf": hf}
    try:
        from lm_eval import utils as lm_utils
    except Exception:
        return out
    # lm-eval: disjoint windows kept in request order and batched as they come.
    widths = []
    for n in lengths:
        for context, cont in map(
            lm_utils.make_disjoint_window,
            lm_utils.get_rolling_token_windows(list(range(n)), -1, max_length, 1),
        ):
            widths.append(len((context + cont)[-(max_length + 1) :][:-1]))
    out["lm_eval"] = _batched_positions(widths, batch_size)
    return out


def perplexity(scores: Scores) -> float:
    return math.exp(sum(n for n, _ in scores) / sum(t for _, t in scores))


def compare(name: str, a: Scores, b: Scores, is_long: list[bool]) -> str:
    """Largest per-text |NLL difference| for single-window and long texts, and token-count agreement."""
    parts = []
    for label, want in (("short", False), ("long", True)):
        diffs = [abs(x[0] - y[0]) for x, y, lg in zip(a, b, is_long, strict=True) if lg == want]
        rel = [
            abs(x[0] - y[0]) / max(x[0], 1e-9) for x, y, lg in zip(a, b, is_long, strict=True) if lg == want
        ]
        if diffs:
            parts.append(f"{label}: max |dNLL| {max(diffs):.2e} nats (max rel {max(rel):.1e})")
    same_tokens = sum(x[1] == y[1] for x, y in zip(a, b, strict=True))
    ppl_a, ppl_b = perplexity(a), perplexity(b)
    return (
        f"  {name}: ppl {ppl_a:.4f} vs {ppl_b:.4f} (rel diff {abs(ppl_a - ppl_b) / ppl_b:.2e}); "
        f"{'; '.join(parts)}; token counts equal for {same_tokens}/{len(a)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=240, help="short texts (one corpus line each)")
    parser.add_argument("--long", type=int, default=12, help="long texts, each --join lines joined")
    parser.add_argument("--join", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-lm-eval", action="store_true", help="skip lm-eval (not installed)")
    parser.add_argument("--layers", type=int, default=_common.ModelSize.n_layer)
    parser.add_argument("--width", type=int, default=_common.ModelSize.n_embd)
    parser.add_argument("--heads", type=int, default=_common.ModelSize.n_head)
    parser.add_argument("--context", type=int, default=_common.ModelSize.n_positions)
    parser.add_argument(
        "--vocab-size", type=int, default=0, help="pad the LM head to a real vocabulary size, e.g. 32000"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see _common.py)")
    args = parser.parse_args()
    _common.quiet_and_threads(args.threads)
    size = _common.ModelSize(args.layers, args.width, args.heads, args.context, args.vocab_size)
    max_length, stride = args.context, args.context // 2
    texts = make_texts(args.texts, args.long, args.join, args.seed)

    with tempfile.TemporaryDirectory(prefix="bench-ppl-") as tmp:
        folder = _common.build_model(Path(tmp), size)
        print(f"model: random-init GPT-2 {size}, vocab from {_common.tokenizer_dir().name}")
        print(_common.machine())
        tokenizer = AutoTokenizer.from_pretrained(folder)
        lengths = [len(tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]) for t in texts]
        is_long = [n + 1 > max_length for n in lengths]
        print(
            f"{len(texts)} texts, {sum(lengths)} tokens; {sum(is_long)} exceed the context "
            f"({max(lengths)} tokens at most); max_length {max_length}, stride {stride}"
        )
        A = f"aigc-eval loglikelihood (batch {args.batch_size}, stride {stride})"
        A_FULL = f"aigc-eval loglikelihood (batch {args.batch_size}, stride {max_length})"
        A_EXACT = f"aigc-eval, fused_activations=False (batch {args.batch_size}, stride {stride})"
        H = f"HF docs recipe (unbatched, stride {stride})"
        L = f"lm-eval loglikelihood_rolling (batch {args.batch_size}, add_bos_token=False)"
        D = "lm-eval default (tokenizer adds BOS too)"
        loaders: dict[str, Callable[[list[str]], Scores] | str] = {
            A: aigc(folder, args.batch_size, max_length, stride),
            A_FULL: aigc(folder, args.batch_size, max_length, max_length),
            A_EXACT: aigc(folder, args.batch_size, max_length, stride, fused_activations=False),
            H: hf_docs_recipe(folder, max_length, stride),
        }
        if not args.no_lm_eval:
            loaders[L] = lm_eval_rolling(folder, args.batch_size, bos_in_tokenizer=False)
        runs: dict[str, Callable[[], Scores]] = {}
        for name, runner in loaders.items():
            if isinstance(runner, str):
                print(f"SKIPPED {name}: lm-eval cannot be imported here: {runner}")
                continue
            runner(texts[:4])  # warm-up
            runs[name] = lambda runner=runner: runner(texts)
        times, scores = _common.best_of(runs, args.repeats)
        if L in runs:
            # lm-eval's default tokenizer setting: checked once for the convention, not timed.
            default = lm_eval_rolling(folder, args.batch_size, bos_in_tokenizer=True)
            assert not isinstance(default, str)
            scores[D] = default(texts)

    work = positions(lengths, max_length, stride, args.batch_size)
    work_of = {A: work["aigc"], A_FULL: work["aigc_full"], A_EXACT: work["aigc"], H: work["hf"]}
    work_of[L] = work.get("lm_eval", "")
    rows = []
    for name, value in scores.items():
        t = times.get(name)
        timed = (
            ["(not timed)", "", "", "", ""]
            if t is None
            else [
                f"{t.wall:.2f}",
                f"{t.cpu:.2f}",
                f"{t.wall / times[A].wall:.2f}x",
                f"{t.cpu / times[A].cpu:.2f}x",
                f"{t.cpu / times[A_FULL].cpu:.2f}x",
            ]
        )
        scored = sum(n for _, n in value)
        rows.append([name, *timed, work_of.get(name, ""), scored, f"{perplexity(value):.4f}"])

    print("\nAgreement (per-text summed NLL):")
    print(compare("aigc stride/2 vs HF recipe", scores[A], scores[H], is_long))
    print(compare("aigc stride/2 vs the same, fused_activations=False", scores[A], scores[A_EXACT], is_long))
    if L in scores:
        print(compare("aigc full stride vs lm-eval", scores[A_FULL], scores[L], is_long))
        print(compare("aigc stride/2 vs lm-eval", scores[A], scores[L], is_long))
        print(compare("lm-eval default vs add_bos_token=False", scores[D], scores[L], is_long))

    print(
        f"\nPerplexity, {len(texts)} texts, max_length {max_length} "
        f"(best of {args.repeats}, {args.threads} torch thread(s))"
    )
    print(
        f"ratio = method time / aigc-eval time at stride {stride} (higher = aigc-eval faster); last "
        f"ratio column: CPU time / aigc-eval CPU time at stride {max_length} (same windows as lm-eval)"
    )
    header = ["method", "wall s", "CPU s", "wall ratio", "CPU ratio", "CPU ratio, full stride"]
    header += ["positions run", "tokens scored", "perplexity"]
    print(_common.table(header, rows))
    print("positions run: token positions the model processes, padding included (the compute bought)")
    print(_common.machine())


if __name__ == "__main__":
    main()
