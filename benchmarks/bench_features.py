"""Feature extraction throughput per backbone, what the feature cache saves on a second run, and
what decoding in worker processes saves (``--section workers``).

Run: ``.venv/bin/python benchmarks/bench_features.py [--images 32] [--device cpu] [--backbones ...]``
     ``.venv/bin/python benchmarks/bench_features.py --section workers [--workers 2] [--decode-images 192]``

For each backbone, on the first ``--images`` images of the demo reference set:

* cold run: build the backbone (hash its weights), list and hash the images,
  decode-check them, load the network, extract, write the cache entry;
* throughput: images/s of the extraction itself (decode + resize + forward),
  excluding the one-off network load;
* cached run: the same call again with a fresh backbone object — weights hash,
  image hashes, cache read, no network load;
* ratio: cold / cached wall time (the bar: at least 10x).

``clip`` and ``dinov2`` use random-init networks of real sizes (CLIP ViT-B/32
vision tower, DINOv2 ViT-S/14) saved to a temp folder unless ``--clip-path`` /
``--dinov2-path`` name real checkpoints: speed does not depend on trained weights.

``--section workers``: on ``--decode-images`` seeded JPEGs of ``--decode-size`` pixels, the
validation pass and a full uncached ``extract_features`` with decoding in this process
(``workers=1``) and in ``--workers`` processes, interleaved round by round (best of ``--repeats``),
through efficientnet-lite0 and through a network-free stand-in (per-image colour statistics: a
network as fast as a GPU's, where decoding is all that is left). Wall seconds, worker start-up
included, and this process's CPU seconds (``time.process_time``: the work left in the process that
feeds the network; steadier than wall time on a shared machine); the features of both paths must be
identical (checked).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from PIL import Image

# No torch at the top: decoding workers re-run the main script's imports, and torch would cost each
# worker ~1.5 s (the aigc-eval CLI's own top level is light).
from aigc_eval.features import BACKBONE_NAMES, extract_features, get_backbone
from aigc_eval.features.cache import FeatureCache
from aigc_eval.images import Decoder, ImageSet, open_image_set, readable_positions
from aigc_eval.parallel import worker_count

if TYPE_CHECKING:
    from aigc_eval.features.base import Backbone

REFERENCE = Path(__file__).resolve().parents[1] / "suites" / "data" / "images" / "reference"


def random_vision_checkpoint(kind: str, folder: Path) -> Path:
    """A seeded random-init checkpoint with a real model's shape and image processor."""
    import torch
    from transformers import (
        BitImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
    )

    torch.manual_seed(0)
    target = folder / kind
    if kind == "clip":  # ViT-B/32 vision tower; a one-layer text tower (loaded but never run)
        text = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2}
        vision = {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
        }
        config = CLIPConfig(text_config=text, vision_config={**vision, "image_size": 224, "patch_size": 32})
        CLIPModel(config).save_pretrained(target)
        CLIPImageProcessor().save_pretrained(target)  # resize 224, centre-crop 224, CLIP mean/std
    else:  # ViT-S/14
        config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14)
        Dinov2Model(config).save_pretrained(target)
        crop = {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}}
        BitImageProcessor(**crop).save_pretrained(target)  # DINOv2's published preprocessing
    return target


def bench(name: str, path: str | None, listing: Path, device: str, cache: FeatureCache) -> str:
    """One table row: cold extraction (with network load), throughput, cached re-run."""
    start = time.perf_counter()
    backbone = get_backbone(name, path, device)
    images = open_image_set(listing)
    load_start = time.perf_counter()
    backbone.load()
    extract_start = time.perf_counter()
    extract_features(backbone, images, cache)
    end = time.perf_counter()
    cold, load = end - start, extract_start - load_start
    again_start = time.perf_counter()
    again = extract_features(get_backbone(name, path, device), open_image_set(listing), cache)
    cached = time.perf_counter() - again_start
    if not again.cache_hit:
        raise SystemExit(f"{name}: the second run missed the cache")
    rate = len(images) / (end - extract_start)
    return f"{name:<20}{cold:>9.2f}{load:>12.2f}{rate:>10.2f}{cached:>10.3f}{cold / cached:>9.0f}x"


def colour_stats() -> Backbone:
    """A network-free stand-in: colour mean and std of every 16th pixel (the time left is decoding)."""
    import torch

    from aigc_eval.features.base import Backbone

    class ColourStats(Backbone):
        name = "colour-stats"
        feature_dim = 6
        weights_sha256 = "0" * 64
        resize = "none"
        preprocessing = "mean-std"
        batch_size = 32

        def _load(self) -> None:
            pass

        def _forward(self, images: list[np.ndarray]) -> tuple[torch.Tensor, None]:
            cheap = [x[::16, ::16] for x in images]  # a sample of the pixels: next to no work per image
            stats = [np.concatenate([x.mean(axis=(0, 1)), x.std(axis=(0, 1))]) for x in cheap]
            return torch.tensor(np.array(stats), dtype=torch.float32), None

    return ColourStats("cpu")


def jpeg_set(folder: Path, count: int, size: int) -> ImageSet:
    """Seeded photo-like JPEGs (smooth gradients plus noise, quality 90)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    ramp = np.linspace(0, 1, size)
    for i in range(count):
        base = np.stack([np.add.outer(ramp * rng.uniform(0, 255), ramp * rng.uniform(0, 255))] * 3, axis=2)
        noisy = base / 2 + rng.normal(0, 20, (size, size, 3)) + rng.uniform(0, 60, 3)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)
    return open_image_set(folder)


def bench_workers(images: ImageSet, workers: int, repeats: int, device: str) -> None:
    """In-process vs worker decoding: the validation pass, and a whole uncached extraction; wall
    seconds and this (the network's) process's CPU seconds."""
    print(
        f"{'network':<20}{'pass':<10}{'wall s: here':>13}{f'{workers} workers':>11}{'ratio':>8}"
        f"{'main CPU s: here':>18}{f'{workers} workers':>11}{'ratio':>8}"
    )
    print("-" * 99, flush=True)
    networks = [get_backbone("efficientnet-lite0", None, device), colour_stats()]
    for network in networks:
        network.load()
        best: dict[tuple[str, int], tuple[float, float]] = {}
        features: dict[int, np.ndarray] = {}
        for _ in range(repeats):
            for count in (1, workers):
                clocks = [(time.perf_counter(), time.process_time())]
                with Decoder(count) as decoder:
                    readable_positions(images, decoder=decoder)
                clocks.append((time.perf_counter(), time.process_time()))
                features[count] = extract_features(network, images, None, workers=count).features
                clocks.append((time.perf_counter(), time.process_time()))
                for step, part in enumerate(("validate", "extract")):
                    wall, cpu = (clocks[step + 1][k] - clocks[step][k] for k in (0, 1))
                    old = best.get((part, count), (float("inf"), float("inf")))
                    best[(part, count)] = (min(old[0], wall), min(old[1], cpu))
        if not np.array_equal(features[1], features[workers]):
            raise SystemExit(f"{network.name}: worker decoding changed the features")
        for part in ("validate", "extract"):
            (wall_here, cpu_here), (wall_there, cpu_there) = best[(part, 1)], best[(part, workers)]
            print(
                f"{network.name:<20}{part:<10}{wall_here:>13.2f}{wall_there:>11.2f}"
                f"{wall_here / wall_there:>7.2f}x{cpu_here:>18.2f}{cpu_there:>11.2f}"
                f"{cpu_here / cpu_there:>7.2f}x",
                flush=True,
            )
    print("features identical in both paths: yes")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--section", choices=("cache", "workers"), default="cache")
    parser.add_argument("--images", type=int, default=32, help="how many demo reference images (max 100)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONE_NAMES), choices=BACKBONE_NAMES)
    parser.add_argument("--clip-path", help="a real CLIP checkpoint folder (default: random-init ViT-B/32)")
    parser.add_argument(
        "--dinov2-path", help="a real DINOv2 checkpoint folder (default: random-init ViT-S/14)"
    )
    parser.add_argument("--workers", type=int, default=worker_count(), help="decoding processes to compare")
    parser.add_argument("--decode-images", type=int, default=384)
    parser.add_argument("--decode-size", type=int, default=512, help="JPEG width and height in pixels")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if args.section == "workers":
        with tempfile.TemporaryDirectory() as tmp:
            images = jpeg_set(Path(tmp) / "jpegs", args.decode_images, args.decode_size)
            print(
                f"{len(images)} JPEGs {args.decode_size}x{args.decode_size}, device={args.device}, "
                f"cpus={os.cpu_count()}, torch_threads={torch.get_num_threads()}, load={load}"
            )
            bench_workers(images, args.workers, args.repeats, args.device)
        return
    files = sorted(REFERENCE.glob("*.png"))[: args.images]
    print(
        f"{len(files)} images of {REFERENCE.name} (64x64 PNG), device={args.device}, cpus={os.cpu_count()}, "
        f"torch_threads={torch.get_num_threads()}, load={load}"
    )
    header = f"{'backbone':<20}{'cold s':>9}{'net load s':>12}{'images/s':>10}{'cached s':>10}{'ratio':>10}"
    print(header)
    print("-" * len(header), flush=True)
    given = {"clip": args.clip_path, "dinov2": args.dinov2_path}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        listing = root / "images.txt"
        listing.write_text("".join(f"{f}\n" for f in files))
        for name in args.backbones:
            path = given.get(name)
            if name in given and path is None:
                path = str(random_vision_checkpoint(name, root / "checkpoints"))
            print(bench(name, path, listing, args.device, FeatureCache(root / "cache")), flush=True)


if __name__ == "__main__":
    main()
