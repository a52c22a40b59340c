"""Where ``HFBackend.loglikelihood`` spends its time, and a benchmark-local prototype that spends less.

Run with the benchmark venv (see README.md):

    /work/bench-venv/bin/python benchmarks/profile_loglikelihood.py --vocab-size 32000

The shipped ``_window_nll`` projects every position of every window onto the vocabulary (the LM
head) and log-softmaxes each row's full ``[width - 1, vocab]`` logits, although with
``stride = max_length / 2`` half of a long window is context only, and short windows carry right
padding. The prototype (not part of aigc_eval; a suggestion for ``aigc_eval/backends/hf.py``)
passes ``logits_to_keep`` as a boolean ``[batch, width]`` mask of the scored positions, so the LM
head and one log-softmax run on scored positions only, and drops the attention mask when a batch
has no padding. A second variant also cuts a batch early when the next (sorted) window is under
half the batch width, so the one batch where long windows meet short ones does not pad the short
ones to the full context. Both must give the same NLL to float32 rounding; the script checks that.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import _common
import bench_perplexity
import torch

from aigc_eval.backends.base import TokenLogLikelihood
from aigc_eval.backends.hf import HFBackend, _windows


class ScoredPositionsBackend(HFBackend):
    """``HFBackend`` whose window NLL computes logits only where a token is scored."""

    cut_batches = False

    def loglikelihood(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        stride: int | None = None,
        prepend_bos: bool = True,
    ) -> list[TokenLogLikelihood]:
        """The shipped method (validation left out), batching through ``_batches``."""
        max_length = max_length or self.context_length()
        assert max_length is not None
        stride = stride or max_length
        prefix = [self._start_id()] if prepend_bos else []
        windows: list[tuple[int, list[int], int]] = []
        for number, text in enumerate(texts):
            seq = prefix + self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            windows += [(number, ids, context) for ids, context in _windows(seq, max_length, stride)]
        windows.sort(key=lambda w: -len(w[1]))
        nll = [0.0] * len(texts)
        tokens = [0] * len(texts)
        for batch in self._batches(windows):
            for (number, ids, context), value in zip(batch, self._window_nll(batch), strict=True):
                nll[number] += value
                tokens[number] += len(ids) - context
        return [TokenLogLikelihood(n, t) for n, t in zip(nll, tokens, strict=True)]

    def _batches(
        self, windows: list[tuple[int, list[int], int]]
    ) -> Iterator[list[tuple[int, list[int], int]]]:
        """``batch_size`` windows at a time (longest first); with ``cut_batches``, fewer when the
        next window is under half the batch's width, as padding it would waste more than it saves."""
        begin = 0
        while begin < len(windows):
            end = begin + 1
            width = len(windows[begin][1])
            while (
                end < len(windows)
                and end - begin < self.batch_size
                and (not self.cut_batches or 2 * len(windows[end][1]) >= width)
            ):
                end += 1
            yield windows[begin:end]
            begin = end

    def _window_nll(self, batch: list[tuple[int, list[int], int]]) -> list[float]:
        width = max(len(ids) for _, ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        targets = torch.zeros((len(batch), width), dtype=torch.long)
        # keep[r, p]: the logit at position p predicts a scored token (p + 1 is scored).
        keep = torch.zeros((len(batch), width), dtype=torch.bool)
        padded = False
        for row, (_, ids, context) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            targets[row, : len(ids) - 1] = torch.tensor(ids[1:])
            keep[row, max(context, 1) - 1 : len(ids) - 1] = True
            padded |= len(ids) < width
        # Without padding the model can use its causal fast path instead of an explicit mask.
        mask = None
        if padded:
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids, _) in enumerate(batch):
                mask[row, : len(ids)] = 1
            mask = mask.to(self.device)
        with torch.inference_mode():
            try:
                logits = self.model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=mask,
                    logits_to_keep=keep.to(self.device),
                ).logits  # [scored positions of all rows, vocab], row-major
            except TypeError:  # a model without logits_to_keep: slice the full logits instead
                full = self.model(input_ids=input_ids.to(self.device), attention_mask=mask).logits
                logits = full[keep.to(self.device)]
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(-1, targets[keep].to(self.device).unsqueeze(-1)).squeeze(-1)
            counts = keep.sum(dim=1).tolist()
            return [-part.sum().item() for part in torch.split(picked, counts)]


class CutBatchesBackend(ScoredPositionsBackend):
    """The prototype plus padding-aware batch cuts."""

    cut_batches = True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=240)
    parser.add_argument("--long", type=int, default=12)
    parser.add_argument("--join", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=0, help="pad the LM head, e.g. 32000")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _common.quiet_and_threads(args.threads)
    size = _common.ModelSize(vocab_size=args.vocab_size)
    max_length, stride = size.n_positions, size.n_positions // 2
    texts = bench_perplexity.make_texts(args.texts, args.long, args.join, seed=0)

    with tempfile.TemporaryDirectory(prefix="profile-ll-") as tmp:
        folder = _common.build_model(Path(tmp), size)
        shipped = HFBackend(str(folder), dtype="float32", device="cpu", batch_size=args.batch_size)
        print(f"model: random-init GPT-2 {size}, tokenizer vocabulary {len(shipped.tokenizer)}")
        print(_common.machine())
        proto = ScoredPositionsBackend(str(folder), dtype="float32", device="cpu", batch_size=args.batch_size)
        cut = CutBatchesBackend(str(folder), dtype="float32", device="cpu", batch_size=args.batch_size)

        # Component costs of the shipped path, measured once on the real batches.
        started = time.process_time()
        for text in texts:
            shipped.tokenizer(text, add_special_tokens=False, verbose=False)
        tokenize = time.process_time() - started
        print(f"tokenizing {len(texts)} texts: {tokenize:.3f} s CPU")

        runs = {
            "shipped HFBackend.loglikelihood": lambda: shipped.loglikelihood(texts, max_length, stride),
            "prototype: logits only at scored positions": lambda: proto.loglikelihood(
                texts, max_length, stride
            ),
            "prototype + padding-aware batch cuts": lambda: cut.loglikelihood(texts, max_length, stride),
        }
        for run in runs.values():
            run()  # warm-up
        times, results = _common.best_of(runs, args.repeats)
        names = list(runs)
        a = results[names[0]]
        for name in names[1:]:
            b = results[name]
            worst = max(abs(x.nll - y.nll) / max(x.nll, 1e-9) for x, y in zip(a, b, strict=True))
            same_tokens = all(x.tokens == y.tokens for x, y in zip(a, b, strict=True))
            print(
                f"{name} vs shipped: max rel. NLL difference {worst:.1e}, token counts equal: {same_tokens}"
            )

        # How the shipped time splits: the model forward alone (all windows, same batches) vs the rest.
        width_batches = _shipped_batches(shipped, texts, max_length, stride, args.batch_size)
        started = time.process_time()
        with torch.inference_mode():
            for input_ids, mask in width_batches:
                shipped.model(input_ids=input_ids, attention_mask=mask)
        forward = time.process_time() - started

    ref = times[names[0]]
    rows = [
        [n, f"{times[n].wall:.2f}", f"{times[n].cpu:.2f}", f"{ref.cpu / times[n].cpu:.2f}x"] for n in names
    ]
    rows.append(["  shipped: model forward alone (full logits)", "", f"{forward:.2f}", ""])
    rows.append(["  shipped: tokenization alone", "", f"{tokenize:.2f}", ""])
    print(f"\nloglikelihood, {len(texts)} texts, vocab_size {args.vocab_size or 'tokenizer'}")
    print(_common.table(["method", "wall s", "CPU s", "speed-up (shipped CPU s / CPU s)"], rows))


def _shipped_batches(
    backend: HFBackend, texts: list[str], max_length: int, stride: int, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The shipped code's padded batches, to time the model forward alone."""
    start = backend._start_id()
    windows = []
    for text in texts:
        seq = [start, *backend.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]]
        windows += [ids for ids, _ in _windows(seq, max_length, stride)]
    windows.sort(key=lambda w: -len(w))
    out = []
    for begin in range(0, len(windows), batch_size):
        chunk = windows[begin : begin + batch_size]
        width = max(len(w) for w in chunk)
        ids = torch.full((len(chunk), width), backend.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, w in enumerate(chunk):
            ids[row, : len(w)] = torch.tensor(w)
            mask[row, : len(w)] = 1
        out.append((ids, mask))
    return out


if __name__ == "__main__":
    main()
