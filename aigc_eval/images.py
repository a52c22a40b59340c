"""Image-set inputs: a folder, a list file, or precomputed statistics in ``.npz``.

An image set is read in two steps so that a bad file never costs finished work:
``open_image_set`` lists the files and hashes their bytes (the hashes key the
feature cache), then ``validate`` decodes every image once, before any network
runs, and either names the bad files or, with ``skip_corrupt``, drops them.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.metrics import image as im
from aigc_eval.metrics.image import FeatureSet

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
STATS_SUFFIX = ".npz"
_SHOWN_BAD = 5  # bad files named in one error message


@dataclass(frozen=True)
class ImageSet:
    """The image files of one set, in order, with the sha256 of each file's bytes."""

    source: Path
    files: tuple[Path, ...]
    hashes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, keep: Sequence[int]) -> ImageSet:
        return ImageSet(self.source, tuple(self.files[i] for i in keep), tuple(self.hashes[i] for i in keep))


def is_stats_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == STATS_SUFFIX


def open_image_set(path: str | Path) -> ImageSet:
    """List and hash the images of a folder (recursive, sorted) or a list file (one path per line).

    In a folder only files with an image suffix count (others are ignored, as in
    clean-fid and pytorch-fid); lines of a list file are paths relative to the
    list file, blank lines and ``#`` comments skipped.
    """
    source = Path(path)
    if not source.exists():
        raise UserError(f"{source}: no such file or folder; pass an image folder, a list file or an .npz")
    if source.is_dir():
        files = sorted(
            (p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(source).as_posix(),
        )
        if not files:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise UserError(f"{source}: no images found (looked for {suffixes}, recursively)")
    elif is_stats_file(source):
        raise UserError(f"{source}: is precomputed statistics, not images; it cannot be re-extracted")
    else:
        files = _read_list_file(source)
    return ImageSet(source, tuple(files), tuple(_sha256_file(f) for f in files))


def _read_list_file(source: Path) -> list[Path]:
    try:
        # One path per "\n"-line, as for every line-aligned file: U+2028 or U+0085 may be in a name.
        lines = source.read_bytes().decode("utf-8-sig").split("\n")
    except UnicodeDecodeError:
        raise UserError(
            f"{source}: not a text list of image paths (and not a folder or .npz); "
            f"pass a folder, a UTF-8 file with one image path per line, or an .npz"
        ) from None
    entries = [line.strip() for line in lines]
    files = [source.parent / entry for entry in entries if entry and not entry.startswith("#")]
    if not files:
        raise UserError(f"{source}: the list file names no images; write one image path per line")
    missing = [f for f in files if not f.is_file()]
    if missing:
        shown = ", ".join(str(f) for f in missing[:_SHOWN_BAD])
        raise UserError(
            f"{source}: {len(missing)} listed image(s) do not exist: {shown}; "
            f"paths are relative to the list file's folder"
        )
    return files


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_image(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB; L, RGBA (alpha dropped), P etc. go through PIL's ``convert("RGB")`` as in clean-fid.

    Raises ``UserError`` naming the file when PIL cannot decode it.
    """
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            image.load()
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UserError(f"{path}: not a readable image ({error}); remove it or pass --skip-corrupt") from None


def validate(images: ImageSet, skip_corrupt: bool = False) -> tuple[ImageSet, list[Path]]:
    """Decode every image once; return the readable subset and the skipped files.

    Without ``skip_corrupt`` any unreadable file is a ``UserError`` listing the bad
    files; with it they are dropped with a warning that gives the count.
    """
    keep: list[int] = []
    bad: list[tuple[Path, str]] = []
    for i, path in enumerate(images.files):
        try:
            decode_image(path)
        except UserError as error:
            bad.append((path, str(error)))
            continue
        keep.append(i)
    skipped = [path for path, _ in bad]
    if bad and not skip_corrupt:
        shown = "; ".join(message for _, message in bad[:_SHOWN_BAD])
        more = f" (and {len(bad) - _SHOWN_BAD} more)" if len(bad) > _SHOWN_BAD else ""
        raise UserError(f"{images.source}: {len(bad)} unreadable image(s): {shown}{more}")
    if not keep:
        raise UserError(f"{images.source}: none of its {len(images)} images could be read")
    if bad:
        warn_skipped(images.source, skipped)
    return images.subset(keep), skipped


def warn_skipped(source: Path, skipped: Sequence[Path]) -> None:
    names = ", ".join(p.name for p in skipped[:_SHOWN_BAD])
    warnings.warn(f"{source}: skipped {len(skipped)} unreadable image(s): {names}", stacklevel=3)


def iter_batches(images: ImageSet, batch_size: int) -> Iterator[list[np.ndarray]]:
    """Decoded images in order, ``batch_size`` at a time (the set was validated before)."""
    for start in range(0, len(images), batch_size):
        yield [decode_image(p) for p in images.files[start : start + batch_size]]


def load_stats(path: str | Path) -> tuple[FeatureSet, dict[str, str]]:
    """Read ``features`` (+ ``logits``) or pytorch-fid's ``mu``/``sigma`` from an ``.npz``.

    Also returns the provenance that ``aigc-eval stats`` stores as ``meta_*`` strings
    (backbone, weights hash, preprocessing); it is empty for a pytorch-fid file.
    """
    source = Path(path)
    if not source.is_file():
        raise UserError(f"{source}: no such .npz file")
    try:
        with np.load(source, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{source}: not a readable .npz ({error})") from None
    meta = {key[5:]: str(arrays.pop(key)) for key in list(arrays) if key.startswith("meta_")}
    features = _float_matrix(source, arrays, "features")
    logits = _float_matrix(source, arrays, "logits")
    if features is not None:
        if len(features) < 2:
            raise UserError(f"{source}: 'features' has {len(features)} row(s); statistics need at least 2")
        if logits is not None and len(logits) != len(features):
            raise UserError(f"{source}: 'logits' has {len(logits)} rows but 'features' has {len(features)}")
        return FeatureSet.from_features(features, logits), meta
    if "mu" not in arrays or "sigma" not in arrays:
        raise UserError(
            f"{source}: holds {sorted(arrays) or 'nothing'}; expected 'mu' and 'sigma' (pytorch-fid) "
            f"or 'features' (written by aigc-eval stats)"
        )
    for key in ("mu", "sigma"):
        if not np.issubdtype(arrays[key].dtype, np.number):
            raise UserError(f"{source}: '{key}' must be numeric, got {arrays[key].dtype}")
    mu, sigma = im.as_gaussian(arrays["mu"], arrays["sigma"])
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise UserError(
            f"{source}: 'mu' has shape {np.shape(arrays['mu'])} and 'sigma' {np.shape(arrays['sigma'])}; "
            f"need (d,) and (d, d) with the same d"
        )
    for key, value in (("mu", mu), ("sigma", sigma)):
        if not np.isfinite(value).all():
            raise UserError(f"{source}: '{key}' contains NaN or infinity; recompute the statistics")
    problem = im.covariance_problem(sigma)
    if problem is not None:
        raise UserError(
            f"{source}: 'sigma' {problem}, so it is not a covariance matrix; recompute it with "
            f"np.cov(features, rowvar=False) or aigc-eval stats"
        )
    n = int(arrays["n"]) if "n" in arrays and arrays["n"].ndim == 0 else None
    return FeatureSet(mu, sigma, n), meta


def _float_matrix(source: Path, arrays: dict[str, np.ndarray], key: str) -> np.ndarray | None:
    if key not in arrays:
        return None
    value = arrays[key]
    if value.ndim != 2 or not np.issubdtype(value.dtype, np.number):
        raise UserError(f"{source}: '{key}' must be a numeric N×d matrix, got {value.dtype} {value.shape}")
    value = value.astype(np.float64)
    if not np.isfinite(value).all():
        raise UserError(f"{source}: '{key}' contains NaN or infinity")
    return value
