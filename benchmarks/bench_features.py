"""Feature extraction throughput per backbone, and what the feature cache saves on a second run.

Run: ``.venv/bin/python benchmarks/bench_features.py [--images 32] [--device cpu] [--backbones ...]``

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
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from aigc_eval.features import BACKBONE_NAMES, extract_features, get_backbone
from aigc_eval.features.cache import FeatureCache
from aigc_eval.images import open_image_set

REFERENCE = Path(__file__).resolve().parents[1] / "suites" / "data" / "images" / "reference"


def random_vision_checkpoint(kind: str, folder: Path) -> Path:
    """A seeded random-init checkpoint with a real model's shape and image processor."""
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=32, help="how many demo reference images (max 100)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONE_NAMES), choices=BACKBONE_NAMES)
    parser.add_argument("--clip-path", help="a real CLIP checkpoint folder (default: random-init ViT-B/32)")
    parser.add_argument(
        "--dinov2-path", help="a real DINOv2 checkpoint folder (default: random-init ViT-S/14)"
    )
    args = parser.parse_args()
    files = sorted(REFERENCE.glob("*.png"))[: args.images]
    print(
        f"{len(files)} images of {REFERENCE.name} (64x64 PNG), device={args.device}, cpus={os.cpu_count()}, "
        f"torch_threads={torch.get_num_threads()}, load={' '.join(f'{x:.1f}' for x in os.getloadavg())}"
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
