"""Write the demo image sets under suites/data/images/ (procedural, seeded, offline).

* ``reference/``: 100 images of one to three coloured shapes (disc, square,
  triangle) on a two-colour gradient background, 64×64 PNG.
* ``gen-faithful/``: 100 more draws from the same generator (another seed) — a
  "generator" that matches the reference distribution.
* ``gen-degraded/``: 100 draws from the same generator, then blurred, washed out
  and noised — a worse "generator".

Image metrics must rank ``gen-faithful`` above ``gen-degraded`` against
``reference``. Run: ``python scripts/make_demo_images.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 64
COUNT = 100
SEEDS = {"reference": 1, "gen-faithful": 2, "gen-degraded": 3}
PALETTE = np.array(
    [
        [220, 40, 40],
        [40, 160, 60],
        [40, 80, 220],
        [240, 200, 30],
        [160, 60, 200],
        [30, 190, 200],
        [250, 130, 20],
    ]
)


def _background(rng: np.random.Generator) -> Image.Image:
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, SIZE)[:, None, None]
    pixels = (1 - ramp) * top + ramp * bottom
    return Image.fromarray(np.broadcast_to(pixels, (SIZE, SIZE, 3)).astype(np.uint8))


def draw_scene(rng: np.random.Generator) -> Image.Image:
    """One to three shapes of palette colours, each 12..28 px, anywhere on the canvas."""
    image = _background(rng)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        colour = tuple(int(c) for c in PALETTE[rng.integers(len(PALETTE))])
        extent = int(rng.integers(12, 29))
        x, y = (int(v) for v in rng.integers(0, SIZE - extent, size=2))
        box = (x, y, x + extent, y + extent)
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(x, y + extent), (x + extent // 2, y), (x + extent, y + extent)], fill=colour)
    return image


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Blur, wash out towards grey and add Gaussian noise: what a weak generator's samples look like."""
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(radius=2.0)), dtype=np.float64)
    washed = 0.6 * blurred + 0.4 * 128.0
    noisy = washed + rng.normal(0.0, 18.0, size=washed.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def write_set(folder: Path, seed: int, degraded: bool) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(COUNT):
        image = draw_scene(rng)
        if degraded:
            image = degrade(image, rng)
        image.save(folder / f"{i:03d}.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_out = Path(__file__).resolve().parent.parent / "suites" / "data" / "images"
    parser.add_argument("--out", type=Path, default=default_out, help="folder for the three sets")
    args = parser.parse_args()
    for name, seed in SEEDS.items():
        write_set(args.out / name, seed, degraded=name == "gen-degraded")
    total = sum(p.stat().st_size for p in args.out.rglob("*.png"))
    print(f"wrote {3 * COUNT} images under {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
