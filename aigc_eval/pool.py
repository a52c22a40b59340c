"""The models a run needs, each loaded once, shared by the rows that use it, freed after its last use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aigc_eval.backends import create_backend, scorer_row
from aigc_eval.backends.base import Backend, TokenLogLikelihood
from aigc_eval.cache import GenerationCache, decode_loglikelihood, encode_loglikelihood, loglikelihood_key
from aigc_eval.config import MetricSpec, ModelRow, Suite
from aigc_eval.errors import UserError
from aigc_eval.metrics.registry import metric_class
from aigc_eval.preflight import local_path


class MemoizedScorer:
    """Remembers per-text log-likelihoods, so rows sharing a scoring model (e.g. the
    references' perplexity under one model) score each text once; with a ``cache``, also across
    runs (``loglikelihood_key``), so an unchanged rerun never runs, or loads, the model for them.
    ``from_cache`` counts the texts asked for that the cache answered (repeats included)."""

    def __init__(self, backend: Backend, cache: GenerationCache | None = None, label: str = "") -> None:
        self._backend = backend
        self._cache = cache
        self._label = f"{label} log-likelihood"
        self._memo: dict[tuple[Any, ...], TokenLogLikelihood] = {}
        self.from_cache = 0

    def loglikelihood(
        self,
        texts: Sequence[str],
        max_length: int | None = None,
        stride: int | None = None,
        prepend_bos: bool = True,
        contexts: Sequence[str] | None = None,
        per_token: bool = False,
    ) -> list[TokenLogLikelihood]:
        options = (max_length, stride, prepend_bos, per_token)
        keys = [(t, contexts[i] if contexts else None, *options) for i, t in enumerate(texts)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._memo))
        cache_keys: dict[tuple[Any, ...], str] = {}
        if missing and self._cache is not None:
            identity = self._backend.cache_identity()
            cache_keys = {k: loglikelihood_key(identity, *k) for k in missing}
            found = self._cache.get_many(list(cache_keys.values()))
            hits = {k for k in missing if cache_keys[k] in found}
            self._memo.update((k, decode_loglikelihood(found[cache_keys[k]].text)) for k in hits)
            self.from_cache += sum(k in hits for k in keys)
            missing = [k for k in missing if k not in hits]
        if missing:
            fresh = self._backend.loglikelihood(
                [k[0] for k in missing],
                max_length,
                stride,
                prepend_bos,
                contexts=[k[1] for k in missing] if contexts else None,
                per_token=per_token,
            )
            self._memo.update(zip(missing, fresh, strict=True))
            if self._cache is not None:
                self._cache.put_many(
                    (cache_keys[k], encode_loglikelihood(self._memo[k]), self._memo[k].tokens, self._label)
                    for k in missing
                )
        return [self._memo[k] for k in keys]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def scoring_row(name: str | None, row: ModelRow, rows: dict[str, ModelRow]) -> ModelRow:
    """What scores for ``row``: its own model, a named row, or a model path (an hf row in float32)."""
    if name is None:
        return row
    if name in rows:
        return rows[name]
    device = getattr(row, "device", None)
    return scorer_row(name, **({"device": device} if device is not None else {}))


def scoring_rows(suite: Suite, row: ModelRow) -> list[ModelRow]:
    """The rows whose models score ``row``'s texts (model-backed metrics)."""
    rows = {r.name: r for r in suite.models}
    return [
        scoring_row(spec.options.get("model"), row, rows)
        for spec in suite.metrics
        if metric_class(spec.name).needs_scorer
    ]


class BackendPool:
    """Loads each distinct model once and frees it after its last use."""

    def __init__(self, suite: Suite, base_dir: Path, cache: GenerationCache | None = None) -> None:
        """``cache``: where scorers keep log-likelihoods across runs (None: only within the run)."""
        self._base_dir = base_dir
        self._cache = cache
        self._loaded: dict[tuple[Any, ...], Backend] = {}
        self._scorers: dict[tuple[Any, ...], MemoizedScorer] = {}
        self._rows = {row.name: row for row in suite.models}
        self._index = {row.name: i for i, row in enumerate(suite.models)}

    def resolve_path(self, path: str) -> str:
        """A path relative to the suite's folder, made absolute; a hub id unchanged."""
        local = local_path(path, self._base_dir)
        return str(local.resolve()) if local.exists() else path

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Metric options naming files (an evaluate ``module``) resolve against the suite folder."""
        if isinstance(options.get("module"), str):
            return {**options, "module": self.resolve_path(options["module"])}
        return options

    def get(self, row: ModelRow) -> Backend:
        key = row.load_key()
        if key not in self._loaded:
            self._loaded[key] = self._create(row)
        return self._loaded[key]

    def _create(self, row: ModelRow) -> Backend:
        where = f"models[{self._index[row.name]}] ({row.name})" if row.name in self._index else row.name
        try:
            backend = create_backend(row.with_paths(self.resolve_path))
        except UserError as error:
            raise UserError(f"{where}: {error}") from None
        if self._cache is not None:
            backend.use_cache(self._cache)
        return backend

    def scorer(self, spec: MetricSpec, row: ModelRow) -> MemoizedScorer:
        """The model a model-backed metric scores with: a named row, a path (checked by
        ``check_plan``), or the row's own."""
        target = scoring_row(spec.options.get("model"), row, self._rows)
        key = target.load_key()
        if key not in self._scorers:
            self._scorers[key] = MemoizedScorer(
                self.get(target), self._cache, f"{target.backend}:{target.name}"
            )
        return self._scorers[key]

    def release_unused(self, keep: set[tuple[Any, ...]]) -> None:
        for key in list(self._loaded):
            if key not in keep:
                del self._loaded[key]
                self._scorers.pop(key, None)
