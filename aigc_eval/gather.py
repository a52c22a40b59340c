"""gather: the units of one row × task merged back into one set of rows, in example order.

Units of a task are shards of its examples; they may have run in any order or process. Merging by
example index makes the result independent of how the examples were split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aigc_eval.execute import UnitResult
from aigc_eval.metrics.base import MetricContext

# Timing fields that add up over shards; the rest describe one process's throughput.
_SUMMED = ("resumed_samples", "truncated_prompts", "generated_tokens", "scoring_s")


@dataclass
class Gathered:
    model: str
    task: str
    kind: str
    predictions: list[str] = field(default_factory=list)  # in example order
    stats: list[np.ndarray] = field(default_factory=list)  # per metric entry, rows in example order
    contexts: list[MetricContext] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    image: Any = None  # image_scoring.ImageOutcome for image tasks


def gather(results: list[UnitResult]) -> list[Gathered]:
    """One ``Gathered`` per row × task, in the order their first unit appears."""
    groups: dict[tuple[str, str], list[UnitResult]] = {}
    for result in results:
        groups.setdefault((result.unit.row.name, result.unit.task), []).append(result)
    return [_merge(parts) for parts in groups.values()]


def _merge(parts: list[UnitResult]) -> Gathered:
    first = parts[0]
    merged = Gathered(first.unit.row.name, first.unit.task, first.unit.kind, image=first.image)
    if first.unit.kind == "image":
        merged.timing = dict(first.timing)
        return merged
    indices = [i for part in parts for i in part.indices]
    if len(set(indices)) != len(indices):
        raise ValueError(f"{merged.model} × {merged.task}: units overlap in their examples")
    order = np.argsort(indices, kind="stable")
    predictions = [p for part in parts for p in part.predictions]
    merged.predictions = [predictions[i] for i in order]
    merged.stats = [np.concatenate([part.stats[m] for part in parts])[order] for m in range(len(first.stats))]
    merged.contexts = first.contexts
    merged.timing = _merged_timing([part.timing for part in parts])
    return merged


def _merged_timing(timings: list[dict[str, Any]]) -> dict[str, Any]:
    if len(timings) == 1:
        return dict(timings[0])
    out = dict(timings[0])
    for key in _SUMMED:
        values = [t[key] for t in timings if t.get(key) is not None]
        out[key] = round(sum(values), 4) if values else None
    return out
