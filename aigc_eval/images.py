"""Image-set inputs: a folder, a list file, or precomputed statistics in ``.npz``; both sides of a
scoring as feature sets (``ImageSides``).

An image set is read in two steps so that a bad file never costs finished work:
``open_image_set`` lists the files and hashes their bytes (the hashes key the
feature cache), then ``validate`` decodes every image once, before any network
runs, and either names the bad files or, with ``skip_corrupt``, drops them.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.features import extract_features, get_backbone
from aigc_eval.features.cache import FeatureCache
from aigc_eval.files import sha256_files
from aigc_eval.metrics.image import FeatureSet, as_gaussian, covariance_problem

if TYPE_CHECKING:
    from aigc_eval.features.base import Backbone

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
STATS_SUFFIX = ".npz"
_SHOWN_BAD = 5  # bad files named in one error message
_META_KEYS = ("backbone", "weights_sha256", "preprocessing", "resize")

# Where image features are cached: None is the default folder, False no cache.
CacheDir = str | Path | Literal[False] | None


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


def list_image_files(path: str | Path) -> list[Path]:
    """The image files of a set in set order, without reading them: a folder's (recursive, sorted by
    relative path) or a list file's (one path per line, relative to the list file).

    In a folder only files with an image suffix count (others are ignored, as in clean-fid and
    pytorch-fid); blank lines and ``#`` comments of a list file are skipped. The report's thumbnails
    use this too, so they show the images in the order they were scored.
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
        return files
    if is_stats_file(source):
        raise UserError(f"{source}: is precomputed statistics, not images; it cannot be re-extracted")
    return _read_list_file(source)


def open_image_set(path: str | Path) -> ImageSet:
    """``list_image_files`` with the sha256 of each file's bytes (the hashes key the feature cache)."""
    files = list_image_files(path)
    return ImageSet(Path(path), tuple(files), tuple(sha256_files([f]) for f in files))


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
    mu, sigma = as_gaussian(arrays["mu"], arrays["sigma"])
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise UserError(
            f"{source}: 'mu' has shape {np.shape(arrays['mu'])} and 'sigma' {np.shape(arrays['sigma'])}; "
            f"need (d,) and (d, d) with the same d"
        )
    for key, value in (("mu", mu), ("sigma", sigma)):
        if not np.isfinite(value).all():
            raise UserError(f"{source}: '{key}' contains NaN or infinity; recompute the statistics")
    problem = covariance_problem(sigma)
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


class ImageSides:
    """Both sides of a scoring (generated, reference) as feature sets, through one lazily built
    backbone and one feature cache; ``.npz`` statistics must say they come from that backbone."""

    def __init__(
        self,
        backbone: str,
        backbone_path: str | Path | None,
        device: str,
        cache_dir: CacheDir,
        skip_corrupt: bool,
    ) -> None:
        self.backbone_name = backbone
        self.backbone_path = backbone_path
        self.device = device
        self.cache = None if cache_dir is False else FeatureCache(cache_dir)
        self.skip_corrupt = skip_corrupt
        self.backbone: Backbone | None = None
        self.metas: dict[str, dict[str, str]] = {}
        self.skipped: dict[str, list[str]] = {}

    def load(self, path: str | Path, role: str) -> FeatureSet:
        if is_stats_file(path):
            feature_set, meta = load_stats(path)
            self._check_meta(Path(path), meta)
            self.metas[role] = meta
            return feature_set
        images = open_image_set(path)
        if self.backbone is None:
            self.backbone = get_backbone(self.backbone_name, self.backbone_path, self.device)
        extracted = extract_features(self.backbone, images, self.cache, self.skip_corrupt)
        self.skipped[role] = [str(f) for f in extracted.skipped]
        if len(extracted.features) < 2:
            raise UserError(
                f"{path}: {len(extracted.features)} readable image(s); image metrics need at least 2"
            )
        return FeatureSet.from_features(extracted.features, extracted.logits)

    def _check_meta(self, path: Path, meta: dict[str, str]) -> None:
        if not meta:
            return
        missing = [key for key in _META_KEYS if key not in meta]
        if missing:
            raise UserError(f"{path}: provenance incomplete (no meta_{', meta_'.join(missing)}); rewrite it")
        if meta.get("backbone") != self.backbone_name:
            raise UserError(
                f"{path}: was computed with backbone {meta.get('backbone')}; pass --backbone "
                f"{meta.get('backbone')} or recompute it with aigc-eval stats --backbone {self.backbone_name}"
            )

    def origin(self) -> str:
        """Backbone/weights/resize for signatures; .npz sides must agree with each other and the backbone."""
        known = [self.backbone.identity] if self.backbone is not None else []
        for role, meta in self.metas.items():
            if meta:
                known.append(f"{meta['backbone']}|weights:{meta['weights_sha256']}|{meta['preprocessing']}")
            else:
                warnings.warn(
                    f"{role} statistics carry no provenance (e.g. from pytorch-fid); they compare only "
                    f"if made with the same network and resize as the other side",
                    stacklevel=3,
                )
        if len(set(known)) > 1:
            raise UserError(
                "the two sides were featurised differently (backbone weights or preprocessing differ): "
                + " vs ".join(sorted(set(known)))
                + "; recompute the .npz with aigc-eval stats and the same --backbone/--backbone-path"
            )
        if self.backbone is not None:
            origin = self.backbone.origin
        else:
            meta = next((m for m in self.metas.values() if m), None)
            origin = (
                f"backbone:{meta['backbone']}|weights:{meta['weights_sha256'][:12]}|resize:{meta['resize']}"
                if meta
                else "backbone:unknown|weights:unknown|resize:unknown"
            )
        if any(not meta for meta in self.metas.values()):
            origin += "|stats:external-npz"
        return origin
