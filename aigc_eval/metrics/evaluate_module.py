"""Interop: any Hugging Face ``evaluate`` metric module usable in a suite.

An evaluate module only computes corpus values from strings, so its rows keep the
strings themselves; ``aggregate`` calls the module on whichever rows it is given,
which keeps bootstrap resampling and resume working like for every other metric.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric, MetricContext, References, SampleInputs, Score, check_aligned
from aigc_eval.metrics.registry import metrics


@metrics.register("evaluate")
class EvaluateMetric(Metric):
    name = "evaluate"
    description = "A Hugging Face evaluate module, computed by the module itself; see its signature."
    outputs = ()
    resamplable = False  # each aggregate is a full module.compute() call

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        module: str  # a local metric script/folder (works offline) or a hub name (online)
        config_name: str | None = None
        keys: list[str] | None = None  # which numeric results to report; default: all
        higher_is_better: bool | None = True
        multi_reference: bool = False  # pass every reference (list per sample) instead of the first
        compute_kwargs: dict[str, Any] = Field(default_factory=dict)

    def __init__(
        self, options: Options, lang: str | None = None, context: MetricContext | None = None
    ) -> None:
        super().__init__(options, lang, context)
        self.label = self._label(options)

    @staticmethod
    def _label(options: Options) -> str:
        return Path(options.module).stem if options.module.endswith(".py") else Path(options.module).name

    @classmethod
    def output_names(cls, options: Options) -> tuple[str, ...] | None:
        """``label.key`` per reported key; None (unknown until computed) when ``keys`` is not given."""
        if options.keys is None:
            return None
        return tuple(f"{cls._label(options)}.{key}" for key in options.keys)

    @cached_property
    def _module(self) -> Any:
        return self.load_module()

    def load_module(self) -> Any:
        """The evaluate module; a UserError when it cannot be loaded (missing, broken, offline)."""
        import evaluate  # 4 s to import: only when a suite asks for it

        try:
            return evaluate.load(self.options.module, self.options.config_name)
        except (FileNotFoundError, ValueError, ImportError, OSError) as error:
            raise UserError(
                f"evaluate module {self.options.module!r} could not be loaded ({error}); give the path of a "
                "local evaluate metric script (offline) or a hub metric name (online)"
            ) from None

    def sample_stats(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        check_aligned(predictions, references)
        rows = np.empty((len(predictions), 2), dtype=object)
        for i, (prediction, refs) in enumerate(zip(predictions, references, strict=True)):
            rows[i, 0], rows[i, 1] = prediction, list(refs)
        return rows

    def _compute(self, stats: np.ndarray) -> dict[str, float]:
        predictions = [str(p) for p in stats[:, 0]]
        references = [r if self.options.multi_reference else r[0] for r in stats[:, 1]]
        result = self._module.compute(
            predictions=predictions, references=references, **self.options.compute_kwargs
        )
        numeric = {k: float(v) for k, v in result.items() if isinstance(v, numbers.Number)}
        keys = self.options.keys or list(numeric)
        missing = [k for k in keys if k not in numeric]
        if missing:
            raise UserError(
                f"evaluate module {self.options.module!r} returned no numeric {missing}; "
                f"it returned {sorted(result)}"
            )
        return {k: numeric[k] for k in keys}

    def _output(self, key: str) -> str:
        return f"{self.label}.{key}"

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        return {
            self._output(key): Score(
                self._output(key), value, self.signature(stats), self.options.higher_is_better
            )
            for key, value in self._compute(stats).items()
        }

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        per_sample: dict[str, list[float]] = {}
        for row in range(len(stats)):
            for key, value in self._compute(stats[row : row + 1]).items():
                per_sample.setdefault(self._output(key), []).append(value)
        return per_sample

    def signature(self, stats: np.ndarray) -> str:
        import evaluate

        config = self.options.config_name or "default"
        refs = "all" if self.options.multi_reference else "first"
        return f"evaluate:{evaluate.__version__}|module:{self.label}|config:{config}|refs:{refs}"
