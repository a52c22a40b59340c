"""Backbones load offline with documented shapes and preprocessing; the feature cache; demo ranking."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.features import extract_features, get_backbone
from aigc_eval.features import inception as inception_module
from aigc_eval.features.base import Backbone, clean_resize, scaled_batch
from aigc_eval.features.cache import FeatureCache
from aigc_eval.image_scoring import save_stats, score_images
from aigc_eval.images import open_image_set
from aigc_eval.metrics.image import SampleSizeWarning

DEMO = Path(__file__).resolve().parent.parent / "suites" / "data" / "images"


def images(count: int, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(count)]


def write_images(folder: Path, arrays: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"{i:02d}.png")
    return folder


# ---------------------------------------------------------------- preprocessing


def pil_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """PIL's separable bicubic (a = -0.5, support widened by the scale when shrinking), written out."""

    def cubic(x: float) -> float:
        x = abs(x)
        if x < 1:
            return (1.5 * x - 2.5) * x * x + 1
        if x < 2:
            return (((x - 5) * x + 8) * x - 4) * -0.5
        return 0.0

    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    matrix = np.zeros((out_size, in_size))
    for out in range(out_size):
        centre = (out + 0.5) * scale
        low = max(int(centre - 2 * filter_scale + 0.5), 0)
        high = min(int(centre + 2 * filter_scale + 0.5), in_size)
        weights = np.array([cubic((x - centre + 0.5) / filter_scale) for x in range(low, high)])
        matrix[out, low:high] = weights / weights.sum()
    return matrix


@pytest.mark.parametrize(("height", "width"), [(23, 37), (340, 410)])  # up- and downsampling
def test_clean_resize_is_float_pil_bicubic_clipped(height: int, width: int) -> None:
    image = np.random.default_rng(height).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    resized = clean_resize(image, 299)
    rows, cols = pil_bicubic_matrix(height, 299), pil_bicubic_matrix(width, 299)
    planes = [rows @ image[:, :, c].astype(np.float64) @ cols.T for c in range(3)]
    expected = np.clip(np.stack(planes, axis=2), 0, 255)
    assert resized.shape == (299, 299, 3) and resized.dtype == np.float32
    np.testing.assert_allclose(resized, expected, atol=2e-3)
    assert not np.allclose(resized, np.round(resized))  # not re-quantised to uint8 ("clean" mode)
    if height < 299:
        assert resized.min() == 0.0 and resized.max() == 255.0  # bicubic overshoot, clipped


def test_inception_input_is_unchanged_at_299_and_scaled_to_its_range() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(299, 299, 3), dtype=np.uint8)
    np.testing.assert_array_equal(clean_resize(image, 299), image.astype(np.float32))
    extremes = [np.zeros((10, 10, 3), np.uint8), np.full((10, 10, 3), 255, np.uint8)]
    batch = scaled_batch(extremes, 299, offset=128.0, scale=128.0)
    assert batch.shape == (2, 3, 299, 299) and batch.dtype == torch.float32
    assert batch[0].unique().tolist() == [-1.0] and batch[1].unique().tolist() == [0.9921875]


# ---------------------------------------------------------------- the pretrained backbones


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_inception_loads_offline_from_fid_helper_and_gives_pool3_features() -> None:
    backbone = get_backbone("inception-v3-tf", device="cpu")
    assert backbone.path.name == "default_1.pt"
    assert backbone.weights_sha256 == inception_module.FID_HELPER_SHA256
    batch = images(2, size=64)
    features, logits = backbone.embed([batch[0], batch[0], batch[1]])
    assert features.shape == (3, 2048) and features.dtype == np.float64 and logits is None
    np.testing.assert_array_equal(features[0], features[1])
    assert not np.allclose(features[0], features[2])
    assert features.min() >= 0.0  # pool3 averages post-ReLU activations
    # The whole TorchScript (its own reshape around `layers`) gives the same vector on our input.
    whole = torch.jit.load(str(backbone.path), map_location="cpu").eval()
    with torch.inference_mode():
        direct = whole(scaled_batch([batch[1]], 299, 128.0, 128.0))
    np.testing.assert_allclose(features[2], direct[0].double().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["efficientnet-lite0", "inception-v3-tf"])
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_an_image_s_features_depend_neither_on_its_batch_nor_on_the_thread_count(name: str) -> None:
    """What makes features equal for any process count on a CPU (torchrun runs one thread per
    process): a short batch is padded to the network's batch shape. Unpadded, a batch of 4 through
    either network differed by ~3e-6 between 1 and 2 threads."""
    backbone = get_backbone(name, device="cpu")
    batch = images(backbone.batch_size + 4, size=48, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        short_two_threads, _ = backbone.embed(batch[:4])
        torch.set_num_threads(1)
        short_one_thread, _ = backbone.embed(batch[:4])
        among_others, _ = backbone.embed(batch[:4] + batch[-(backbone.batch_size - 4) :])
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(short_two_threads, short_one_thread)
    np.testing.assert_array_equal(short_one_thread, among_others[:4])


def test_inception_rejects_a_tampered_package_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the network")
    monkeypatch.setattr(inception_module, "fid_helper_weights", lambda: fake)
    with pytest.raises(UserError, match=r"sha256 .* is not the expected 7ff4a85c3a63.*--force-reinstall"):
        get_backbone("inception-v3-tf")
    with pytest.raises(UserError, match="no such Inception TorchScript file"):
        get_backbone("inception-v3-tf", path=tmp_path / "missing.pt")


def test_efficientnet_lite0_features_and_logits_are_the_pretrained_classifier_s() -> None:
    from aigc_eval.features.efficientnet import WEIGHTS_SHA256

    backbone = get_backbone("efficientnet-lite0", device="cpu")
    assert backbone.weights_sha256 == WEIGHTS_SHA256
    batch = images(3, size=50, seed=2)
    features, logits = backbone.embed(batch)
    assert features.shape == (3, 1280) and logits is not None and logits.shape == (3, 1000)
    with torch.inference_mode():
        full = backbone._model(scaled_batch(batch, 224, offset=127.0, scale=128.0))
    np.testing.assert_allclose(logits, full.double().numpy(), rtol=1e-5, atol=1e-5)
    assert backbone.origin.startswith(
        "backbone:efficientnet-lite0|weights:579344248a93|resize:pil-bicubic-224"
    )


# ---------------------------------------------------------------- tiny transformers checkpoints


@pytest.fixture(scope="module")
def tiny_vision_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import (
        BitImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_vision")
    small = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    text = {
        "hidden_size": 16,
        "vocab_size": 64,
        "max_position_embeddings": 16,
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    clip_config = CLIPConfig(
        text_config={**small, **text},
        vision_config={**small, "hidden_size": 16, "image_size": 32, "patch_size": 8},
        projection_dim=12,
    )
    crop = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
    CLIPModel(clip_config).save_pretrained(root / "clip")
    CLIPImageProcessor(**crop).save_pretrained(root / "clip")
    dino_config = Dinov2Config(**small, hidden_size=16, image_size=32, patch_size=8)
    Dinov2Model(dino_config).save_pretrained(root / "dinov2")
    BitImageProcessor(**crop).save_pretrained(root / "dinov2")
    return {"clip": root / "clip", "dinov2": root / "dinov2"}


def test_tiny_clip_gives_unit_norm_projected_image_embeddings(tiny_vision_dirs: dict[str, Path]) -> None:
    from transformers import AutoImageProcessor, CLIPModel

    backbone = get_backbone("clip", tiny_vision_dirs["clip"], device="cpu")
    batch = images(3, size=45, seed=3)
    features, logits = backbone.embed(batch)
    assert features.shape == (3, 12) and logits is None
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-6)
    model = CLIPModel.from_pretrained(tiny_vision_dirs["clip"]).eval()
    pixels = AutoImageProcessor.from_pretrained(tiny_vision_dirs["clip"])(
        images=[Image.fromarray(b) for b in batch], return_tensors="pt"
    )["pixel_values"]
    with torch.inference_mode():
        embeds = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    np.testing.assert_allclose(features, torch.nn.functional.normalize(embeds, dim=-1).numpy(), atol=1e-6)
    assert backbone.resize == "hf-processor-crop32"


def test_tiny_dinov2_gives_the_normalised_cls_token(tiny_vision_dirs: dict[str, Path]) -> None:
    from transformers import AutoImageProcessor, Dinov2Model

    backbone = get_backbone("dinov2", tiny_vision_dirs["dinov2"], device="cpu")
    batch = images(2, size=33, seed=4)
    features, _ = backbone.embed(batch)
    assert features.shape == (2, 16)
    model = Dinov2Model.from_pretrained(tiny_vision_dirs["dinov2"]).eval()
    pixels = AutoImageProcessor.from_pretrained(tiny_vision_dirs["dinov2"])(
        images=[Image.fromarray(b) for b in batch], return_tensors="pt"
    )["pixel_values"]
    with torch.inference_mode():
        cls = model(pixel_values=pixels).last_hidden_state[:, 0]
    np.testing.assert_allclose(features, cls.numpy(), atol=1e-6)


def test_hf_backbones_explain_bad_paths(tiny_vision_dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs a local transformers checkpoint folder"):
        get_backbone("clip")
    with pytest.raises(UserError, match="model_type 'clip' is not a dinov2 checkpoint"):
        get_backbone("dinov2", tiny_vision_dirs["clip"])
    with pytest.raises(UserError, match=r"no config\.json"):
        get_backbone("clip", tmp_path)
    with pytest.raises(UserError, match="unknown backbone 'resnet'"):
        get_backbone("resnet")


def test_cmmd_end_to_end_with_tiny_clip(tiny_vision_dirs: dict[str, Path], tmp_path: Path) -> None:
    gen = write_images(tmp_path / "gen", images(6, seed=5))
    scores = score_images(
        gen, gen, ["cmmd"], "clip", str(tiny_vision_dirs["clip"]), "cpu", tmp_path / "c"
    ).scores
    assert scores["cmmd"].score == pytest.approx(0.0, abs=1e-9)
    assert scores["cmmd"].signature.startswith("cmmd|backbone:clip|weights:")


# ---------------------------------------------------------------- cache


class MeanColour(Backbone):
    """A cheap stand-in network: per-channel mean and std; counts the images it sees."""

    name = "mean-colour"
    feature_dim = 6
    has_logits = False
    weights_sha256 = "0" * 64
    resize = "none"
    preprocessing = "mean-std"
    batch_size = 4

    def __init__(self, path: str | None = None, device: str = "cpu") -> None:
        super().__init__(device)
        self.seen = 0

    def _load(self) -> None:
        pass

    def _forward(self, batch: list[np.ndarray]) -> tuple[torch.Tensor, None]:
        self.seen += len({id(image) for image in batch})  # the images, not the padding copies
        stats = [np.concatenate([b.mean(axis=(0, 1)), b.std(axis=(0, 1))]) for b in batch]
        return torch.tensor(np.array(stats), dtype=torch.float32), None


def test_cache_hit_skips_the_network_and_returns_the_same_features(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "set", images(9, seed=6))
    cache = FeatureCache(tmp_path / "cache")
    backbone = MeanColour()
    first = extract_features(backbone, open_image_set(folder), cache)
    assert not first.cache_hit and backbone.seen == 9
    assert len(list((tmp_path / "cache" / "mean-colour").glob("*.npz"))) == 1
    moved = folder.rename(tmp_path / "moved")  # the key is content, not paths
    second = extract_features(backbone, open_image_set(moved), cache)
    assert second.cache_hit and backbone.seen == 9
    np.testing.assert_array_equal(second.features, first.features)
    Image.fromarray(images(1, seed=99)[0]).save(moved / "03.png")  # one image changed: a miss
    third = extract_features(backbone, open_image_set(moved), cache)
    assert not third.cache_hit and backbone.seen == 18


def test_cache_remembers_skipped_files_and_recovers_from_a_damaged_entry(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "set", images(4, seed=7))
    (folder / "zz.png").write_bytes(b"broken")
    cache, backbone = FeatureCache(tmp_path / "cache"), MeanColour()
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\): zz\.png"):
        first = extract_features(backbone, open_image_set(folder), cache, skip_corrupt=True)
    assert first.features.shape == (4, 6)
    with pytest.raises(UserError, match=r"zz\.png: not a readable image"):
        extract_features(backbone, open_image_set(folder), cache)  # hit, but skipping was not allowed
    with pytest.warns(UserWarning, match="skipped 1"):
        again = extract_features(backbone, open_image_set(folder), cache, skip_corrupt=True)
    assert again.cache_hit and [p.name for p in again.skipped] == ["zz.png"]
    entry = next((tmp_path / "cache" / "mean-colour").glob("*.npz"))
    entry.write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="skipped 1"):
        redone = extract_features(backbone, open_image_set(folder), cache, skip_corrupt=True)
    assert not redone.cache_hit
    np.testing.assert_array_equal(redone.features, first.features)


def test_save_stats_round_trip_and_cached_reload_without_loading_the_network(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "set", images(12, seed=8))
    cache = tmp_path / "cache"
    summary = save_stats(
        folder, tmp_path / "ref.npz", backbone="efficientnet-lite0", device="cpu", cache_dir=cache
    )
    assert (summary.n, summary.dim, summary.backbone, summary.skipped) == (12, 1280, "efficientnet-lite0", 0)
    with np.load(tmp_path / "ref.npz") as data:
        assert {"mu", "sigma", "features", "logits", "n", "meta_backbone"} <= set(data.files)
        assert data["sigma"].shape == (1280, 1280) and str(data["meta_weights_sha256"]).startswith("5793")
    fresh = get_backbone("efficientnet-lite0", device="cpu")
    hit = extract_features(fresh, open_image_set(folder), FeatureCache(cache))
    assert hit.cache_hit and not fresh._loaded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        from_npz = score_images(
            tmp_path / "ref.npz", tmp_path / "ref.npz", ["fid", "is"], "efficientnet-lite0"
        ).scores
        from_folder = score_images(
            folder, tmp_path / "ref.npz", ["fid", "is"], "efficientnet-lite0", cache_dir=cache
        ).scores
    fd, inception = "fd_efficientnet-lite0", "is_efficientnet-lite0"
    assert from_npz[fd].score == 0.0 and from_folder[fd].score == 0.0
    assert from_npz[inception].score == from_folder[inception].score > 1.0
    assert from_npz[inception].name == inception and from_npz[fd].name == fd
    assert from_npz[fd].signature == from_folder[fd].signature


# ---------------------------------------------------------------- demo sets


def test_demo_faithful_generator_beats_the_degraded_one(tmp_path: Path) -> None:
    """On the first 12 images of each committed demo set (efficientnet-lite0, CPU)."""
    lists = {}
    for name in ("reference", "gen-faithful", "gen-degraded"):
        lines = [f"{DEMO.as_posix()}/{name}/{i:03d}.png" for i in range(12)]
        lists[name] = tmp_path / f"{name}.txt"
        lists[name].write_text("\n".join(lines) + "\n")
    metrics = ["fid", "kid", "precision", "density", "coverage"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        good, bad = (
            score_images(
                lists[name], lists["reference"], metrics, "efficientnet-lite0", None, "cpu", tmp_path / "c"
            ).scores
            for name in ("gen-faithful", "gen-degraded")
        )
    assert good["fd_efficientnet-lite0"].score < bad["fd_efficientnet-lite0"].score
    assert good["kd_efficientnet-lite0"].score < bad["kd_efficientnet-lite0"].score
    for name in ("precision", "density", "coverage"):
        assert good[name].score > bad[name].score, name
