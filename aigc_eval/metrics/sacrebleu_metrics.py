"""BLEU, chrF, chrF++ and TER through sacrebleu's own code.

Rows are sacrebleu's per-segment statistics (``_extract_corpus_statistics``)
plus one last column with the sample's reference count; corpus scores come
from sacrebleu's ``_aggregate_and_compute`` on those rows, so they equal
``sacrebleu.corpus_*`` exactly and stay exact on any resampled row subset.

Segment statistics are independent of each other, so TER and chrF compute them in worker
processes (:func:`aigc_eval.parallel.map_chunks`, ``AIGC_EVAL_WORKERS``) on large inputs. BLEU
stays in-process: workers save it ~0.4 s per 5,000 segments, and its tokenized-period
warning counts the whole corpus, which chunks would split.
"""

from __future__ import annotations

import functools
import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sacrebleu import metrics as sb
from sacrebleu.metrics.bleu import MAX_NGRAM_ORDER
from sacrebleu.utils import my_log

from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric, MetricContext, References, SampleInputs, Score, check_aligned
from aigc_eval.metrics.registry import metrics
from aigc_eval.metrics.tokenize import is_cjk_language, language_option, primary_language
from aigc_eval.parallel import map_chunks, sacrebleu_segment_statistics

# Extras to install for tokenizers whose dependencies are optional in sacrebleu.
_TOKENIZER_EXTRAS = {"ja-mecab": "sacrebleu[ja]", "ko-mecab": "sacrebleu[ko]"}


def nrefs_label(counts: np.ndarray) -> int | str:
    """sacrebleu's ``nrefs`` value: the count when all samples agree, else ``var``."""
    distinct = np.unique(counts)
    return int(distinct[0]) if len(distinct) == 1 else "var"


class _SacreMetric(Metric):
    """Shared row handling for the sacrebleu-backed metrics."""

    additive = True

    higher_is_better: ClassVar[bool] = True
    _dtype: ClassVar[type] = np.int64  # sacrebleu's counts; TER's averaged lengths need float
    _corpus: Any  # the sacrebleu metric object for corpus scores
    _sentence: Any  # the one for per-sample scores (BLEU needs effective order there)
    # Fewest samples worth starting worker processes for (~0.1 s); None: always in-process.
    parallel_min_items: ClassVar[int | None] = None

    @abstractmethod
    def _width(self) -> int:
        """Number of sacrebleu statistics per segment (to shape an empty input)."""

    def _details(self, score: Any) -> dict[str, float]:
        return {}

    def sample_stats(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        check_aligned(predictions, references)
        if not predictions:
            return np.zeros((0, self._width() + 1), dtype=self._dtype)
        pairs = list(zip(predictions, references, strict=True))
        if self.parallel_min_items is None:
            rows = sacrebleu_segment_statistics(self._corpus, pairs)
        else:
            task = functools.partial(sacrebleu_segment_statistics, self._corpus)
            rows = map_chunks(task, pairs, min_items=self.parallel_min_items)
        counts = [len(refs) for refs in references]
        return np.array([[*row, n] for row, n in zip(rows, counts, strict=True)], dtype=self._dtype)

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        if len(stats) == 0:
            raise ValueError(f"{self.name}: no samples to aggregate")
        score = self._corpus_score(stats)
        output = self.outputs[0]
        return {
            output: Score(
                name=output,
                score=float(score.score),
                signature=self.signature(stats),
                higher_is_better=self.higher_is_better,
                details=self._details(score),
            )
        }

    def values(self, stats: np.ndarray) -> dict[str, float]:
        return {self.outputs[0]: float(self._corpus_score(stats).score)}

    def stacked_values(self, stack: np.ndarray) -> dict[str, np.ndarray]:
        if stack.shape[1] != 1:
            return super().stacked_values(stack)
        # Summed rows (resampling is additive): the score of each sum (a sum of one row is that row).
        return {self.outputs[0]: self._scores_of_sums(stack[:, 0, :-1])}

    def _scores_of_sums(self, sums: np.ndarray) -> np.ndarray:
        """sacrebleu's corpus score of each row of summed statistics. Subclasses vectorise it with
        sacrebleu's float operations in sacrebleu's order, so every value is the same bit for bit."""
        compute = self._corpus._compute_score_from_stats
        return np.array([float(compute(row).score) for row in sums.tolist()], dtype=np.float64)

    def _corpus_score(self, stats: np.ndarray) -> Any:
        # sacrebleu sums the rows itself (sequential Python sums, as in corpus_score).
        return self._corpus._aggregate_and_compute(stats[:, :-1].tolist())

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {
            self.outputs[0]: [
                float(self._sentence._compute_score_from_stats(row).score) for row in stats[:, :-1].tolist()
            ]
        }

    def signature(self, stats: np.ndarray) -> str:
        """sacrebleu's signature string, with ``nrefs`` of these rows (their last column)."""
        nrefs = nrefs_label(stats[:, -1]) if len(stats) else None
        if nrefs is None:
            raise ValueError(f"{self.name}: the number of references is unknown without rows")
        self._corpus.num_refs = -1 if nrefs == "var" else nrefs
        return self._corpus.get_signature().format()


@metrics.register("bleu")
class BLEU(_SacreMetric):
    """sacrebleu BLEU; per-sample scores are ``sentence_bleu`` (effective order)."""

    name = "bleu"
    outputs = ("bleu",)
    description = (
        "sacrebleu corpus BLEU: n-gram matches and lengths are summed over all samples first, then "
        "combined (geometric mean of 1–4-gram precisions × brevity penalty, 0–100). The per-sample "
        "scores are sentence BLEU with effective order, so they do not average to the corpus score."
    )

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        tokenize: str | None = None  # None: chosen from the language, 13a by default
        lowercase: bool = False
        smooth_method: Literal["exp", "floor", "add-k", "none"] = "exp"
        smooth_value: float | None = None
        max_ngram_order: int = Field(MAX_NGRAM_ORDER, ge=1)
        effective_order: bool = False

    def __init__(
        self, options: Options | None = None, lang: str | None = None, context: MetricContext | None = None
    ) -> None:
        super().__init__(options, lang, context)
        self.tokenize = self._choose_tokenizer(self.options.tokenize, language_option(lang, "bleu: lang"))
        kwargs = self.options.model_dump(exclude={"tokenize", "effective_order"})
        try:
            self._corpus = sb.BLEU(
                tokenize=self.tokenize, effective_order=self.options.effective_order, **kwargs
            )
        except (ImportError, RuntimeError, OSError) as exc:
            extra = _TOKENIZER_EXTRAS.get(self.tokenize)
            fix = f'pip install "{extra}"' if extra else "install its dependencies"
            raise UserError(
                f"bleu: tokenize {self.tokenize!r} cannot be loaded ({str(exc).strip()}); "
                f"{fix}, or set the bleu option `tokenize` to another tokenizer, e.g. 'char' or '13a'"
            ) from exc
        self._sentence = sb.BLEU(tokenize=self.tokenize, effective_order=True, **kwargs)

    @staticmethod
    def _choose_tokenizer(tokenize: str | None, lang: str | None) -> str:
        """sacrebleu's choice for a target language (zh, ja-mecab, ko-mecab, else 13a)."""
        if tokenize is None:
            return sb.BLEU._TOKENIZER_MAP.get(primary_language(lang) or "", sb.BLEU.TOKENIZER_DEFAULT)
        if tokenize not in sb.BLEU.TOKENIZERS:
            valid = ", ".join(sorted(sb.BLEU.TOKENIZERS))
            raise UserError(
                f"bleu: unknown tokenize {tokenize!r}; set the option `tokenize` to one of: {valid}"
            )
        return tokenize

    def _width(self) -> int:
        return 2 + 2 * self.options.max_ngram_order

    def _scores_of_sums(self, sums: np.ndarray) -> np.ndarray:
        """``BLEU.compute_bleu`` of every summed row: the precisions (its loop over n-gram orders,
        with smoothing and the break at the first order without n-grams) as array operations, then
        per row sacrebleu's own ``my_log``, Python's ``sum`` and ``math.exp``, as it calls them."""
        corpus, order = self._corpus, self.options.max_ngram_order
        method = corpus.smooth_method
        smooth = corpus.smooth_value if corpus.smooth_value is not None else sb.BLEU.SMOOTH_DEFAULTS[method]
        correct = sums[:, 2 : 2 + order].astype(np.float64)
        total = sums[:, 2 + order : 2 + 2 * order].astype(np.float64)
        precisions = np.zeros_like(correct)
        alive = np.ones(len(sums), dtype=bool)
        effective = np.full(len(sums), order)
        mteval = np.ones(len(sums))
        with np.errstate(divide="ignore", invalid="ignore"):
            for n in range(order):
                if method == "add-k" and n > 0:
                    correct[:, n] += smooth
                    total[:, n] += smooth
                alive &= total[:, n] != 0
                if corpus.effective_order:
                    effective = np.where(alive, n + 1, effective)
                unmatched = alive & (correct[:, n] == 0)
                if method == "exp":
                    mteval = np.where(unmatched, mteval * 2, mteval)
                    precisions[:, n] = np.where(unmatched, 100.0 / (mteval * total[:, n]), 0.0)
                elif method == "floor":
                    precisions[:, n] = np.where(unmatched, 100.0 * smooth / total[:, n], 0.0)
                matched = alive & (correct[:, n] != 0)
                precisions[:, n] = np.where(matched, 100.0 * correct[:, n] / total[:, n], precisions[:, n])
        any_match = (sums[:, 2 : 2 + order] != 0).any(axis=1)
        scores = []
        for (sys_len, ref_len), row, eff, matches in zip(
            sums[:, :2].tolist(), precisions.tolist(), effective.tolist(), any_match.tolist(), strict=True
        ):
            if not matches:  # sacrebleu's early return (#141)
                scores.append(0.0)
                continue
            bp = 1.0
            if sys_len < ref_len:
                bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
            scores.append(bp * math.exp(sum([my_log(p) for p in row[:eff]]) / eff))
        return np.array(scores, dtype=np.float64)

    def _details(self, score: Any) -> dict[str, float]:
        precisions = {f"p{n}": float(p) for n, p in enumerate(score.precisions, start=1)}
        return {"bp": float(score.bp), "sys_len": score.sys_len, "ref_len": score.ref_len, **precisions}


@metrics.register("chrf")
class CHRF(_SacreMetric):
    """sacrebleu chrF (character n-gram F-score, beta 2)."""

    name = "chrf"
    description = (
        "sacrebleu chrF: character n-gram F-score (β=2) from statistics summed over all samples (0–100); "
        "per-sample scores are sentence chrF."
    )
    outputs = ("chrf",)
    # ~0.3 ms a segment: 2 workers broke even at 500 segments, 1.2x at 1,000 (benchmarks/bench_ter.py).
    parallel_min_items = 600

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        char_order: int = Field(sb.CHRF.CHAR_ORDER, ge=1)
        word_order: int = Field(sb.CHRF.WORD_ORDER, ge=0)
        beta: int = Field(sb.CHRF.BETA, ge=0)
        lowercase: bool = False
        whitespace: bool = False
        eps_smoothing: bool = False

    def __init__(
        self, options: Options | None = None, lang: str | None = None, context: MetricContext | None = None
    ) -> None:
        super().__init__(options, lang, context)
        self._corpus = self._sentence = sb.CHRF(**self.options.model_dump())
        # sacrebleu's own naming (chrF2++ for word_order 2): chrF with word n-grams is not chrF.
        self.outputs = ("chrf" + "+" * self.options.word_order,)

    def _width(self) -> int:
        return 3 * (self.options.char_order + self.options.word_order)

    def _scores_of_sums(self, sums: np.ndarray) -> np.ndarray:
        """``CHRF._compute_f_score`` of every summed row, its loop over orders as array operations
        (the same IEEE operations in the same order: equal bit for bit)."""
        corpus, eps = self._corpus, 1e-16
        factor = corpus.beta**2
        stats = sums.astype(np.float64)
        score = np.zeros(len(sums))
        avg_prec, avg_rec = np.zeros(len(sums)), np.zeros(len(sums))
        effective = np.zeros(len(sums), dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            for i in range(corpus.order):
                n_hyp, n_ref, n_match = stats[:, 3 * i], stats[:, 3 * i + 1], stats[:, 3 * i + 2]
                prec = np.where(n_hyp > 0, n_match / n_hyp, eps)
                rec = np.where(n_ref > 0, n_match / n_ref, eps)
                denom = factor * prec + rec
                score = score + np.where(denom > 0, (1 + factor) * prec * rec / denom, eps)
                both = (n_hyp > 0) & (n_ref > 0)
                avg_prec = np.where(both, avg_prec + prec, avg_prec)
                avg_rec = np.where(both, avg_rec + rec, avg_rec)
                effective += both
            if corpus.eps_smoothing:
                return 100 * score / corpus.order
            avg_prec = np.where(effective == 0, 0.0, avg_prec / effective)
            avg_rec = np.where(effective == 0, 0.0, avg_rec / effective)
            combined = (1 + factor) * avg_prec * avg_rec
            combined = combined / ((factor * avg_prec) + avg_rec)
        return np.where(avg_prec + avg_rec != 0, 100 * combined, 0.0)


@metrics.register("chrf++")
class CHRFPlusPlus(CHRF):
    """chrF++: chrF plus word unigrams and bigrams (``word_order=2``)."""

    name = "chrf++"
    description = (
        "sacrebleu chrF++: chrF plus word uni- and bigrams, from statistics summed over all samples."
    )
    outputs = ("chrf++",)

    class Options(CHRF.Options):
        word_order: int = Field(2, ge=0)


@metrics.register("ter")
class TER(_SacreMetric):
    """sacrebleu TER (translation edit rate, lower is better)."""

    name = "ter"
    description = "sacrebleu TER: total edits (with shifts) over total reference words, in percent."
    outputs = ("ter",)
    higher_is_better = False
    _dtype = np.float64
    # ~2.5 ms a segment (the shift search): 2 workers broke even at 100 segments, 1.4x at 200.
    parallel_min_items = 150

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        normalized: bool = False
        no_punct: bool = False
        asian_support: bool | None = None  # None: on for zh/ja/ko
        case_sensitive: bool = False

    def __init__(
        self, options: Options | None = None, lang: str | None = None, context: MetricContext | None = None
    ) -> None:
        super().__init__(options, lang, context)
        kwargs = self.options.model_dump()
        if kwargs["asian_support"] is None:
            kwargs["asian_support"] = is_cjk_language(language_option(lang, "ter: lang"))
        self._corpus = self._sentence = sb.TER(**kwargs)

    def _width(self) -> int:
        return 2

    def _scores_of_sums(self, sums: np.ndarray) -> np.ndarray:
        """``TER._compute_score_from_stats`` of every summed row (edits / reference words, 1 for
        edits against empty references, 0 for nothing against nothing), in percent."""
        edits, ref_length = sums[:, 0].astype(np.float64), sums[:, 1].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(ref_length > 0, edits / ref_length, np.where(edits > 0, 1.0, 0.0))
        return 100 * rate

    def _details(self, score: Any) -> dict[str, float]:
        return {"num_edits": score.num_edits, "ref_length": float(score.ref_length)}
