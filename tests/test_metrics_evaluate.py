"""evaluate interop: a local evaluate module gives the numbers evaluate itself gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigc_eval.errors import UserError
from aigc_eval.metrics import build_metric

MODULE = str(Path(__file__).parent / "assets" / "word_overlap_metric.py")
PREDICTIONS = ["the cat sat", "a dog ran fast", "", "same text"]
REFERENCES = [["the cat sat"], ["the dog ran", "x"], ["nothing"], ["same text"]]


@pytest.fixture(autouse=True)
def _modules_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))


def test_equals_evaluate_compute_on_first_references() -> None:
    import evaluate

    direct = evaluate.load(MODULE).compute(predictions=PREDICTIONS, references=[r[0] for r in REFERENCES])
    metric = build_metric("evaluate", {"module": MODULE})
    scores = metric.compute(PREDICTIONS, REFERENCES)
    assert set(scores) == {"word_overlap_metric.exact", "word_overlap_metric.overlap"}
    assert scores["word_overlap_metric.exact"].score == direct["exact"] == 0.5
    assert scores["word_overlap_metric.overlap"].score == pytest.approx(direct["overlap"], abs=0)
    assert scores["word_overlap_metric.exact"].signature.startswith("evaluate:0.4")


def test_rows_resample_and_give_per_sample_values() -> None:
    metric = build_metric("evaluate", {"module": MODULE, "keys": ["exact"]})
    stats = metric.sample_stats(PREDICTIONS, REFERENCES)
    assert metric.sample_scores(stats) == {"word_overlap_metric.exact": [1.0, 0.0, 0.0, 1.0]}
    assert metric.aggregate(stats[[0, 0, 1]])["word_overlap_metric.exact"].score == pytest.approx(2 / 3)


def test_bad_module_and_key_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="could not be loaded"):
        build_metric("evaluate", {"module": str(tmp_path / "nope.py")}).compute(["a"], [["a"]])
    with pytest.raises(UserError, match=r"returned no numeric \['note'\]"):
        build_metric("evaluate", {"module": MODULE, "keys": ["note"]}).compute(["a"], [["a"]])
