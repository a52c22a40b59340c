"""A local `evaluate` metric module (loads offline), used to test evaluate interop."""

import datasets
import evaluate


class WordOverlap(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Fraction of predictions equal to their reference, and mean shared-word ratio.",
            citation="",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        exact = sum(p == r for p, r in zip(predictions, references, strict=True)) / len(predictions)
        overlaps = [
            len(set(p.split()) & set(r.split())) / max(len(set(r.split())), 1)
            for p, r in zip(predictions, references, strict=True)
        ]
        return {"exact": exact, "overlap": sum(overlaps) / len(overlaps), "note": "not a number"}
