"""Plug-ins: a metric added in one file (here, inside the test) or by an installed package's entry point
is usable by name from suites, ``aigc_eval.score`` and the CLI, with nothing edited in the repository."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from pydantic import BaseModel

import aigc_eval
from aigc_eval.cli import main
from aigc_eval.config import parse_suite
from aigc_eval.errors import UserError
from aigc_eval.metrics.base import Metric, References, SampleInputs, Score
from aigc_eval.metrics.registry import build_metric, metric_names, metrics
from aigc_eval.registry import Registry


class ExactMatch(Metric):
    """A toy metric: the share of predictions equal to one of their references."""

    name = "toy_exact"
    description = "share of predictions equal to a reference"
    outputs = ("toy_exact",)
    additive = True

    class Options(BaseModel):
        strip: bool = True

    def sample_stats(
        self, predictions: Sequence[str], references: References, inputs: SampleInputs | None = None
    ) -> np.ndarray:
        clean = (lambda t: t.strip()) if self.options.strip else (lambda t: t)
        return np.array(
            [
                [float(clean(p) in {clean(r) for r in refs}), 1.0]
                for p, refs in zip(predictions, references, strict=True)
            ]
        ).reshape(len(predictions), 2)

    def aggregate(self, stats: np.ndarray) -> dict[str, Score]:
        hits, n = stats.sum(axis=0)
        return {"toy_exact": Score("toy_exact", float(hits / n), self.signature(stats))}

    def sample_scores(self, stats: np.ndarray) -> dict[str, list[float]]:
        return {"toy_exact": stats[:, 0].tolist()}

    def signature(self, stats: np.ndarray) -> str:
        return f"toy_exact|strip:{'yes' if self.options.strip else 'no'}|n:{len(stats)}"


@pytest.fixture
def toy_metric() -> Iterator[type[Metric]]:
    metrics.register("toy_exact")(ExactMatch)
    yield ExactMatch
    metrics.unregister("toy_exact")


def test_a_metric_registered_in_one_place_is_usable_everywhere(
    toy_metric: type[Metric], capsys, tmp_path
) -> None:
    assert "toy_exact" in metric_names()
    scores = aigc_eval.score("toy_exact", ["a", "b ", "c", "d"], [["a"], ["b"], ["x"], ["y"]], seed=1)
    assert scores["toy_exact"].score == 0.5
    assert scores["toy_exact"].ci is not None and scores["toy_exact"].ci.kind == "bootstrap-percentile"
    assert scores["toy_exact"].signature.startswith("toy_exact|strip:yes|n:4|bs:1000")
    # Suites validate its options through its own Options model, and name its outputs.
    suite = {
        "name": "s",
        "models": [{"name": "m", "path": "x"}],
        "tasks": [{"name": "t", "data": "d.jsonl"}],
        "metrics": [{"name": "toy_exact", "options": {"strip": False}}],
    }
    assert parse_suite(suite).metrics[0].options == {"strip": False}
    with pytest.raises(UserError, match=r"metrics\[0\].*strip"):
        parse_suite({**suite, "metrics": [{"name": "toy_exact", "options": {"strip": "sometimes"}}]})
    # The CLI finds it too.
    (tmp_path / "p.txt").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "r.txt").write_text("a\nc\n", encoding="utf-8")
    code = main(
        [
            "score",
            "--metric",
            "toy_exact",
            "--predictions",
            str(tmp_path / "p.txt"),
            "--references",
            str(tmp_path / "r.txt"),
        ]
    )
    assert code == 0
    assert "toy_exact  0.5000" in capsys.readouterr().out


def test_an_unknown_metric_lists_the_registered_ones(toy_metric: type[Metric]) -> None:
    with pytest.raises(UserError, match=r"unknown metric 'nope'; known metrics: .*bleu.*toy_exact"):
        build_metric("nope")


def test_built_in_metrics_register_through_the_same_decorator() -> None:
    bleu = build_metric("bleu")
    rows = bleu.sample_stats(["the cat sat on the mat"], [["the cat sat on a mat"]])
    expected = sacrebleu.corpus_bleu(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert bleu.aggregate(rows)["bleu"].score == pytest.approx(expected.score, abs=1e-12)
    assert metrics.get("bleu") is type(bleu)


PLUGIN = """
import numpy as np
from pydantic import BaseModel

from aigc_eval.metrics.base import Metric, Score
from aigc_eval.metrics.registry import metrics


@metrics.register("char_count")
class CharCount(Metric):
    name = "char_count"
    description = "mean characters per prediction"
    outputs = ("char_count",)
    additive = True

    class Options(BaseModel):
        pass

    def sample_stats(self, predictions, references, inputs=None):
        return np.array([[len(p), 1] for p in predictions], dtype=float).reshape(len(predictions), 2)

    def aggregate(self, stats):
        total, n = stats.sum(axis=0)
        return {"char_count": Score("char_count", float(total / n), self.signature(stats), None)}

    def sample_scores(self, stats):
        return {"char_count": stats[:, 0].tolist()}

    def signature(self, stats):
        return "char_count|v1"
"""


def installed_plugin(root: Path, group: str, name: str, module: str, source: str) -> None:
    """A tiny installed distribution: its module and a dist-info folder declaring one entry point."""
    (root / f"{module}.py").write_text(source, encoding="utf-8")
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n", encoding="utf-8")


def test_an_installed_package_adds_a_metric_through_its_entry_point(tmp_path, monkeypatch) -> None:
    installed_plugin(tmp_path, "aigc_eval.metrics", "char_count", "toy_metric_plugin", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    metrics.reload_entry_points()
    try:
        scores = aigc_eval.score("char_count", ["abc", "abcde"], n_resamples=0)
        assert scores["char_count"].score == 4.0
        assert scores["char_count"].higher_is_better is None
    finally:
        metrics.unregister("char_count")
        monkeypatch.undo()
        metrics.reload_entry_points()
    assert "char_count" not in metric_names()


def test_a_broken_plugin_names_itself(tmp_path, monkeypatch) -> None:
    installed_plugin(
        tmp_path, "aigc_eval.toy", "broken", "toy_broken_plugin", "raise RuntimeError('no GPU')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[object] = Registry("widget", "aigc_eval.toy")
    with pytest.raises(
        UserError, match=r"widget plug-in 'broken' \(toy_broken_plugin.*failed to load: no GPU"
    ):
        registry.names()
