"""Image-set inputs and score_images' checks: folders, list files, .npz, bad inputs — no network needed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.image_scoring import check_request, score_images
from aigc_eval.images import decode_image, load_stats, open_image_set, validate
from aigc_eval.metrics import image as im


def write_png(path: Path, value: int, mode: str = "RGB", size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size, 3), value, dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def test_folder_is_recursive_sorted_and_filters_by_suffix(tmp_path: Path) -> None:
    write_png(tmp_path / "b.png", 1)
    write_png(tmp_path / "a" / "z.PNG", 2)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "c.jpeg")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "d.webp")
    (tmp_path / "notes.txt").write_text("not an image")
    images = open_image_set(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in images.files] == [
        "a/z.PNG",
        "b.png",
        "c.jpeg",
        "d.webp",
    ]
    assert images.hashes[1] == hashlib.sha256((tmp_path / "b.png").read_bytes()).hexdigest()


def test_list_file_paths_are_relative_to_the_list(tmp_path: Path) -> None:
    write_png(tmp_path / "imgs" / "x.png", 5)
    write_png(tmp_path / "imgs" / "y.png", 6)
    listing = tmp_path / "set.txt"
    listing.write_text("# generated set\nimgs/y.png\n\nimgs/x.png\n")
    images = open_image_set(listing)
    assert [p.name for p in images.files] == ["y.png", "x.png"]  # list order is kept
    listing.write_text("imgs/x.png\nimgs/missing.png\n")
    with pytest.raises(UserError, match=r"1 listed image\(s\) do not exist: .*missing\.png"):
        open_image_set(listing)


def test_list_file_is_split_on_newlines_only_and_may_start_with_a_bom(tmp_path: Path) -> None:
    odd = tmp_path / "imgs" / "a\u2028b\x85c.png"  # legal file-name characters that splitlines() splits on
    write_png(odd, 5)
    write_png(tmp_path / "imgs" / "y.png", 6)
    listing = tmp_path / "set.txt"
    listing.write_bytes(("\ufeffimgs/y.png\r\nimgs/" + odd.name + "\n").encode("utf-8"))
    assert open_image_set(listing).files == (tmp_path / "imgs" / "y.png", odd)


def test_modes_decode_to_uint8_rgb(tmp_path: Path) -> None:
    gray = decode_image(write_png(tmp_path / "l.png", 77, mode="L"))
    assert gray.dtype == np.uint8 and gray.shape == (8, 8, 3) and (gray == 77).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 0  # fully transparent: PIL's convert("RGB") keeps the colour, as clean-fid does
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert decode_image(tmp_path / "a.png")[0, 0].tolist() == [10, 20, 30]
    palette = Image.fromarray(np.full((4, 4, 3), (200, 0, 0), np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    palette.save(tmp_path / "p.png")
    assert decode_image(tmp_path / "p.png")[1, 1].tolist() == [200, 0, 0]


def test_corrupt_file_is_named_or_skipped_with_a_count(tmp_path: Path) -> None:
    write_png(tmp_path / "good1.png", 1)
    write_png(tmp_path / "good2.png", 2)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    truncated = (tmp_path / "good1.png").read_bytes()[:40]
    (tmp_path / "truncated.png").write_bytes(truncated)
    images = open_image_set(tmp_path)
    with pytest.raises(UserError, match=r"2 unreadable image\(s\): .*broken\.png.*truncated\.png"):
        validate(images)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\): broken\.png, truncated\.png"):
        readable, skipped = validate(images, skip_corrupt=True)
    assert [p.name for p in readable.files] == ["good1.png", "good2.png"]
    assert [p.name for p in skipped] == ["broken.png", "truncated.png"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "nowhere", "no such file or folder"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "no images found"),
        (lambda root: _write(root / "list.txt", b"\xff\xfe\x00binary"), "not a text list of image paths"),
        (lambda root: _write(root / "list.txt", b"# only a comment\n"), "names no images"),
        (lambda root: _write(root / "ref.npz", b"garbage"), "is precomputed statistics, not images"),
    ],
)
def test_bad_image_set_paths(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(UserError, match=message):
        open_image_set(make(tmp_path))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_npz_from_pytorch_fid_and_from_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((20, 4)).astype(np.float32)
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    np.savez(tmp_path / "pfid.npz", mu=mu, sigma=sigma)
    stats, meta = load_stats(tmp_path / "pfid.npz")
    assert meta == {} and stats.n is None and stats.features is None
    np.testing.assert_array_equal(stats.sigma, sigma)
    np.savez(tmp_path / "feat.npz", features=features, meta_backbone=np.array("efficientnet-lite0"))
    stats, meta = load_stats(tmp_path / "feat.npz")
    assert meta == {"backbone": "efficientnet-lite0"} and stats.n == 20
    assert stats.features.dtype == np.float64
    np.testing.assert_allclose(stats.sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-12)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"mu": np.zeros(3)}, r"expected 'mu' and 'sigma'"),
        ({"mu": np.zeros(3), "sigma": np.zeros((2, 2))}, r"need \(d,\) and \(d, d\)"),
        ({"mu": np.full(2, np.nan), "sigma": np.eye(2)}, "NaN or infinity"),
        ({"features": np.zeros(5)}, "numeric N×d matrix"),
        ({"features": np.zeros((1, 3))}, "at least 2"),
        ({"features": np.zeros((4, 3)), "logits": np.zeros((3, 10))}, "'logits' has 3 rows"),
    ],
)
def test_bad_npz_contents(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load_stats(tmp_path / "bad.npz")


def test_unreadable_npz(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip at all")
    with pytest.raises(UserError, match=r"not a readable \.npz"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(UserError, match=r"no such \.npz"):
        load_stats(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    ("metrics", "backbone", "message"),
    [
        ([], "inception-v3-tf", "no image metric given"),
        (["fid", "lpips"], "inception-v3-tf", "unknown image metric.*lpips.*known: fid, kid"),
        (["fid"], "vgg", "unknown backbone 'vgg'.*efficientnet-lite0"),
        (["is"], "inception-v3-tf", "needs class logits.*--backbone efficientnet-lite0"),
        (["cmmd"], "dinov2", "CLIP embeddings"),
    ],
)
def test_impossible_requests_say_what_works(metrics: list[str], backbone: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_request(metrics, backbone)


def _stats_pair(tmp_path: Path, dim: int = 6) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    gen, ref = rng.standard_normal((40, dim)) + 0.5, rng.standard_normal((50, dim))
    meta = {"meta_backbone": np.array("inception-v3-tf"), "meta_weights_sha256": np.array("ab" * 32)}
    meta |= {"meta_preprocessing": np.array("p"), "meta_resize": np.array("pil-bicubic-299")}
    np.savez(tmp_path / "gen.npz", features=gen, **meta)
    np.savez(tmp_path / "ref.npz", features=ref, **meta)
    return tmp_path / "gen.npz", tmp_path / "ref.npz", gen, ref


def test_score_images_from_two_feature_files(tmp_path: Path) -> None:
    gen_path, ref_path, gen, ref = _stats_pair(tmp_path)
    metrics = ["fid", "kid", "precision", "recall", "density", "coverage", "fid_inf"]
    scores = score_images(gen_path, ref_path, metrics, cache_dir=False).scores
    assert list(scores) == metrics
    g, r = im.FeatureSet.from_features(gen), im.FeatureSet.from_features(ref)
    assert scores["fid"].score == im.frechet_distance_of_sets(g, r)  # sets with features: sample factors
    assert scores["fid"].score == pytest.approx(im.frechet_distance(g.mu, g.sigma, r.mu, r.sigma), rel=1e-12)
    assert scores["kid"].score == im.kernel_inception_distance(gen, ref, seed=0)[0]
    assert scores["precision"].score == im.precision_recall(gen, ref)[0]
    assert scores["fid"].signature == (
        "fid|backbone:inception-v3-tf|weights:abababababab|resize:pil-bicubic-299|n_gen:40|n_ref:50"
        "|trace:eigh|dtype:float64|draws:5x8|seed:0"  # the interval: FID over 5 disjoint draws of 8
    )
    assert scores["kid"].to_dict()["std"] > 0


def test_score_images_rejects_mismatched_or_thin_statistics(tmp_path: Path) -> None:
    gen_path, ref_path, _, ref = _stats_pair(tmp_path)
    np.savez(tmp_path / "pfid.npz", mu=ref.mean(0), sigma=np.cov(ref, rowvar=False))
    with pytest.warns(UserWarning, match="carry no provenance"):
        fid = score_images(gen_path, tmp_path / "pfid.npz", ["fid"], cache_dir=False).scores["fid"]
    assert fid.signature.endswith("|n_gen:40|n_ref:unknown|trace:eigh|dtype:float64|draws:5x8|seed:0")
    assert "stats:external-npz" in fid.signature
    with pytest.raises(
        UserError, match=r"pfid\.npz: holds only mu/sigma, but kid need\(s\) per-image features"
    ):
        score_images(gen_path, tmp_path / "pfid.npz", ["kid"], cache_dir=False)
    np.savez(tmp_path / "wide.npz", features=np.zeros((5, 9)) + np.arange(9))
    with pytest.raises(UserError, match=r"6-d features but .*wide\.npz has 9-d"):
        score_images(gen_path, tmp_path / "wide.npz", ["fid"], cache_dir=False)
    with pytest.raises(UserError, match="computed with backbone inception-v3-tf; pass --backbone inception"):
        score_images(gen_path, ref_path, ["fid"], backbone="efficientnet-lite0", cache_dir=False)
    with pytest.raises(UserError, match="need a reference set"):
        score_images(gen_path, None, ["fid"], cache_dir=False)


def test_score_images_checks_sample_counts_per_metric(tmp_path: Path) -> None:
    gen_path, _, gen, ref = _stats_pair(tmp_path)
    meta = {key: np.array(value) for key, value in load_stats(gen_path)[1].items()}
    np.savez(tmp_path / "five.npz", features=ref[:5], **{f"meta_{k}": v for k, v in meta.items()})
    assert (
        score_images(gen_path, tmp_path / "five.npz", ["precision"], cache_dir=False)
        .scores["precision"]
        .score
        >= 0
    )
    with pytest.raises(UserError, match=r"five\.npz: 5 images; density need more than 5"):
        score_images(gen_path, tmp_path / "five.npz", ["density"], cache_dir=False)
    np.savez(tmp_path / "small.npz", features=gen[:20], **{f"meta_{k}": v for k, v in meta.items()})
    with pytest.raises(UserError, match="fid_inf fits FID at 15 subset sizes and needs at least 30"):
        score_images(tmp_path / "small.npz", gen_path, ["fid_inf"], cache_dir=False)
