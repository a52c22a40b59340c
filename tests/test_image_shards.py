"""Sharded image extraction (torchrun ranks) merges to the one-process outcome exactly; decoding in
worker processes gives the in-process features bit for bit and still names bad files first."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_eval.config import Task
from aigc_eval.errors import UserError
from aigc_eval.features import backbones, extract_features, get_backbone
from aigc_eval.features.base import Backbone
from aigc_eval.image_scoring import (
    ImageOutcome,
    extract_side,
    merge_parts,
    needs_reference,
    save_stats,
    score_image_task,
    score_parts,
)
from aigc_eval.images import decode_workers, open_image_set, shard_positions
from aigc_eval.metrics.image import SampleSizeWarning

DEMO = Path(__file__).resolve().parents[1] / "suites" / "data" / "images"
TOY = "toy-batch-mix"
METRICS = ["fid", "kid", "is", "precision", "recall", "density", "coverage"]


class BatchMix(Backbone):
    """Per-image colour mean and std plus a thousandth of the batch's mean colour: features that
    depend on which images share a batch, as batch-size-dependent kernels make real ones do."""

    name = TOY
    feature_dim = 6
    has_logits = True
    weights_sha256 = "1" * 64
    resize = "none"
    preprocessing = "mean-std+batch-mean"
    batch_size = 4

    def __init__(self, path: str | None = None, device: str = "cpu") -> None:
        super().__init__(device)
        self.seen = 0

    def _load(self) -> None:
        pass

    def _forward(self, batch: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen += len({id(image) for image in batch})  # the images, not the padding copies
        means = np.array([image.mean(axis=(0, 1)) for image in batch])
        stds = np.array([image.std(axis=(0, 1)) for image in batch])
        features = np.concatenate([means + 1e-3 * means.mean(axis=0), stds], axis=1)
        logits = np.concatenate([means / 64, stds[:, :1] / 64], axis=1)
        return torch.tensor(features, dtype=torch.float32), torch.tensor(logits, dtype=torch.float32)


@pytest.fixture(autouse=True)
def toy_backbone() -> Iterator[None]:
    backbones.register(TOY)(BatchMix)
    yield
    backbones.unregister(TOY)


def write_set(folder: Path, count: int, seed: int, bad: tuple[str, ...] = ()) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        low = int(rng.integers(0, 60))
        Image.fromarray(rng.integers(low, low + 190, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    for name in bad:
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


@pytest.fixture()
def sets(tmp_path: Path) -> dict[str, Path]:
    """23 generated images with two corrupt files among them (25 positions), 19 reference images."""
    generated = write_set(tmp_path / "gen", 23, seed=1, bad=("06_bad.png", "17_bad.png"))
    reference = write_set(tmp_path / "ref", 19, seed=2)
    return {"generated": generated, "reference": reference, "root": tmp_path}


def task_for(reference: Path) -> Task:
    return Task(
        name="shapes",
        kind="image",
        reference=str(reference),
        backbone=TOY,
        image_metrics=METRICS,
        skip_corrupt=True,
    )


def sharded(generated: Path, reference: Path, task: Task, count: int, cache_dir: Path | bool) -> ImageOutcome:
    """What the distributed runner does: every rank extracts its shard of both sides, rank 0 scores."""
    parts: dict[str, list] = {"generated": [], "reference": []}
    for index in reversed(range(count)):  # gather order must not matter
        for role, path in (("generated", generated), ("reference", reference)):
            part = extract_side(
                path, role, TOY, device="cpu", cache_dir=cache_dir, skip_corrupt=True, shard=(index, count)
            )
            parts[role].append(pickle.loads(pickle.dumps(part)))  # through gather_object
    return score_parts(parts["generated"], parts["reference"], task, seed=5)


def assert_same_outcome(got: ImageOutcome, expected: ImageOutcome) -> None:
    assert got.scores == expected.scores  # every score, signature, detail and interval
    assert (got.skipped, got.device, got.source) == (expected.skipped, expected.device, expected.source)
    for side in ("generated", "reference"):
        mine, theirs = getattr(got, side), getattr(expected, side)
        assert mine.n == theirs.n
        for field in ("mu", "sigma", "features", "logits"):
            a, b = getattr(mine, field), getattr(theirs, field)
            assert (a is None) == (b is None), field
            if a is not None:
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("reference_kind", ["folder", "npz"])
def test_merged_shards_score_exactly_as_one_process(
    sets: dict[str, Path], count: int, reference_kind: str
) -> None:
    reference = sets["reference"]
    if reference_kind == "npz":
        reference = save_stats(reference, sets["root"] / "ref.npz", backbone=TOY, cache_dir=False).path
    task = task_for(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\): 06_bad\.png, 17_bad\.png"):
            expected = score_image_task(
                sets["generated"], reference, task, device="cpu", seed=5, cache_dir=False
            )
        with pytest.warns(UserWarning, match=r"skipped \d unreadable"):
            got = sharded(sets["generated"], reference, task, count, cache_dir=False)
    assert_same_outcome(got, expected)
    gen_dir = sets["generated"]
    assert expected.skipped["generated"] == [str(gen_dir / "06_bad.png"), str(gen_dir / "17_bad.png")]
    assert ("reference" in expected.skipped) is (reference_kind == "folder")
    assert expected.generated.n == 23 and expected.reference.n == 19
    assert expected.scores["is_" + TOY].score > 1.0 and 0 < expected.scores["coverage"].score <= 1


def test_batches_follow_set_positions_so_strided_images_would_differ(sets: dict[str, Path]) -> None:
    """Why shards are whole batches: the toy's features depend on the batch, so a shard of every
    third image (batched among themselves) gets other features than the whole set gives them."""
    images = open_image_set(sets["reference"])
    whole = extract_features(BatchMix(), images).features
    strided = extract_features(BatchMix(), images.subset(range(0, 19, 3))).features
    assert not np.array_equal(strided, whole[0::3])
    part = extract_side(sets["reference"], "reference", TOY, cache_dir=False, shard=(1, 3))
    assert part.positions.tolist() == [4, 5, 6, 7, 16, 17, 18]  # blocks 1 and 4 of 4 positions
    np.testing.assert_array_equal(part.features, whole[part.positions])
    assert part.features.dtype == np.float32  # the float64 rows hold float32 values: half the bytes


def test_shard_positions_split_a_set_into_whole_batches() -> None:
    for size in (1, 3, 4, 25, 64):
        for count in (1, 2, 3, 5):
            shards = [shard_positions(size, 4, (index, count)) for index in range(count)]
            assert sorted(i for shard in shards for i in shard) == list(range(size))
            for shard in shards:
                assert all(i // 4 == j // 4 or i % 4 == 0 for i, j in zip(shard[1:], shard, strict=False))
    assert shard_positions(10, 4, (1, 2)) == [4, 5, 6, 7]
    assert shard_positions(10, 4, (2, 3)) == [8, 9] and shard_positions(10, 4, (0, 3)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="0 <= index < count"):
        shard_positions(10, 4, (3, 3))


def test_npz_side_is_whole_on_shard_zero_and_empty_elsewhere(sets: dict[str, Path]) -> None:
    stats = save_stats(sets["reference"], sets["root"] / "ref.npz", backbone=TOY, cache_dir=False).path
    first, second = (extract_side(stats, "reference", TOY, shard=(i, 2)) for i in range(2))
    assert first.stats is not None and first.stats.n == 19 and first.meta["backbone"] == TOY
    assert second.stats is None and second.meta is None and len(second.positions) == 0
    merged = merge_parts([second, first])
    np.testing.assert_array_equal(merged.features.features, first.stats.features)
    with pytest.raises(UserError, match="was computed with backbone toy-batch-mix; pass --backbone"):
        extract_side(stats, "reference", "efficientnet-lite0", shard=(0, 2))


def test_merge_needs_one_part_per_shard(sets: dict[str, Path]) -> None:
    parts = [
        extract_side(sets["reference"], "reference", TOY, cache_dir=False, shard=(i, 3)) for i in range(3)
    ]
    with pytest.raises(ValueError, match="one part per shard"):
        merge_parts(parts[:2])
    with pytest.raises(ValueError, match="one part per shard"):
        merge_parts([parts[0], parts[0], parts[2]])
    with pytest.warns(UserWarning, match="skipped 2"):  # shard 1 of 3 holds both bad files
        other = extract_side(
            sets["generated"], "reference", TOY, cache_dir=False, skip_corrupt=True, shard=(1, 3)
        )
    with pytest.raises(ValueError, match="one part per shard of one side"):
        merge_parts([parts[0], other, parts[2]])


def test_too_few_images_fail_on_merge_and_before_the_other_side_in_one_process(tmp_path: Path) -> None:
    small = write_set(tmp_path / "small", 1, seed=3, bad=("x_bad.png",))
    with pytest.warns(UserWarning, match="skipped 1"):
        parts = [
            extract_side(small, "generated", TOY, cache_dir=False, skip_corrupt=True, shard=(i, 2))
            for i in (0, 1)
        ]
    with pytest.raises(UserError, match=r"small: 1 readable image\(s\); image metrics need at least 2"):
        merge_parts(parts)
    with pytest.raises(UserError, match="need at least 2"), pytest.warns(UserWarning, match="skipped 1"):
        score_image_task(small, tmp_path / "missing", task_for(tmp_path / "missing"), cache_dir=False)


def test_a_rerun_with_the_same_shards_hits_the_cache(sets: dict[str, Path]) -> None:
    network, cache = BatchMix(), sets["root"] / "cache"
    first = [
        extract_side(sets["reference"], "reference", network, cache_dir=cache, shard=(i, 2)) for i in (0, 1)
    ]
    assert network.seen == 19
    again = [
        extract_side(sets["reference"], "reference", network, cache_dir=cache, shard=(i, 2)) for i in (0, 1)
    ]
    assert network.seen == 19  # both shards from the cache
    np.testing.assert_array_equal(merge_parts(again).features.features, merge_parts(first).features.features)
    extract_side(sets["reference"], "reference", network, cache_dir=cache, shard=(0, 3))
    assert network.seen == 19 + 8  # another shard count: other parts, a miss


def test_reference_is_extracted_only_for_metrics_that_use_one(sets: dict[str, Path]) -> None:
    assert needs_reference(["is", "fid"]) and not needs_reference(["is"])
    task = Task(name="t", kind="image", backbone=TOY, image_metrics=["is"], reference=str(sets["reference"]))
    gen = [extract_side(sets["reference"], "generated", TOY, cache_dir=False)]
    outcome = score_parts(gen, None, task)
    assert outcome.reference is None and outcome.skipped == {"generated": []}
    # The task's reference does not exist: one process never opens it for "is" alone.
    one_process = score_image_task(sets["reference"], sets["root"] / "nowhere", task, cache_dir=False)
    assert one_process.scores == outcome.scores and one_process.reference is None
    with pytest.raises(UserError, match=r"metric\(s\) fid need a reference set"):
        score_parts(gen, None, task.model_copy(update={"image_metrics": ["is", "fid"]}))


# ---------------------------------------------------------------- decoding in worker processes


def test_worker_count_small_sets_decode_here_and_the_variable_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIGC_EVAL_WORKERS", "3")
    assert decode_workers(255) == 1 and decode_workers(256) == 3
    monkeypatch.setenv("AIGC_EVAL_WORKERS", "many")
    with pytest.raises(UserError, match="AIGC_EVAL_WORKERS='many' is not a whole number"):
        decode_workers(1000)


def test_worker_decoding_gives_the_in_process_features_bit_for_bit(tmp_path: Path) -> None:
    """efficientnet-lite0 on 40 demo images (batches of 32 and 8), decoded here and in 2 workers."""
    listing = tmp_path / "set.txt"
    listing.write_text("".join(f"{p}\n" for p in sorted((DEMO / "gen-degraded").glob("*.png"))[:40]))
    network = get_backbone("efficientnet-lite0", device="cpu")
    here = extract_features(network, open_image_set(listing), workers=1)
    workers = extract_features(network, open_image_set(listing), workers=2)
    np.testing.assert_array_equal(workers.features, here.features)
    np.testing.assert_array_equal(workers.logits, here.logits)
    assert workers.positions == here.positions == tuple(range(40))


def test_workers_name_bad_files_before_the_network_runs(sets: dict[str, Path]) -> None:
    network = BatchMix()
    images = open_image_set(sets["generated"])
    with pytest.raises(
        UserError, match=r"2 unreadable image\(s\): .*06_bad\.png: not a readable image.*17_bad"
    ):
        extract_features(network, images, workers=2)
    assert network.seen == 0
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\): 06_bad\.png, 17_bad\.png"):
        skipping = extract_features(network, images, skip_corrupt=True, workers=2)
    with pytest.warns(UserWarning, match="skipped 2"):
        here = extract_features(BatchMix(), images, skip_corrupt=True, workers=1)
    np.testing.assert_array_equal(skipping.features, here.features)
    assert skipping.skipped_names == ("06_bad.png", "17_bad.png") and len(skipping.positions) == 23
