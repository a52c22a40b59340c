"""Image-set inputs: a folder, a list file, or precomputed statistics in ``.npz``; one side of a
scoring extracted as a ``SidePart`` (the whole set, or one shard of it for a torchrun rank) and the
parts merged back into a ``Side``.

An image set is read in two steps so that a bad file never costs finished work:
``open_image_set`` lists the files and hashes their bytes (the hashes key the
feature cache), then ``readable_positions`` decodes every image once, before any network
runs, and either names the bad files or, with ``skip_corrupt``, drops them. Both decoding
passes run in worker processes (``Decoder``) on large sets: the check in parallel, and during
extraction the next batches while the network runs the current one.

This module is what a decoding worker imports, so it stays light (numpy, PIL and the standard
library; the metrics and torch load only where they are used).
"""

from __future__ import annotations

import io
import math
import multiprocessing
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.features import extract_features, get_backbone
from aigc_eval.features.cache import FeatureCache
from aigc_eval.files import sha256_files
from aigc_eval.parallel import WORKERS_ENV, worker_count

if TYPE_CHECKING:
    from aigc_eval.features.base import Backbone
    from aigc_eval.metrics.image import FeatureSet

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

    @classmethod
    def hashed(cls, source: str | Path, files: Sequence[Path]) -> ImageSet:
        """The files with the sha256 of each one's bytes."""
        return cls(Path(source), tuple(files), tuple(sha256_files([f]) for f in files))

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
    return ImageSet.hashed(path, list_image_files(path))


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


# ---------------------------------------------------------------- decoding, in worker processes

# Below this many images, starting worker processes (~0.3 s) costs about what they save: decoding
# takes 0.4 ms (64×64 PNG) to 3 ms (512×512 JPEG) to 20 ms (1024×1024 PNG) per image and pass here.
MIN_IMAGES_FOR_WORKERS = 256
_PREFETCH = 2  # batches decoded ahead per worker while the network runs
_CHECK_CHUNKS_PER_WORKER = 4  # the validation pass's tasks: uneven file sizes balance over several


def decode_workers(n_images: int) -> int:
    """Decoding processes for a set of ``n_images``: 1 (this process) below ``MIN_IMAGES_FOR_WORKERS``,
    else ``AIGC_EVAL_WORKERS`` when set, else the CPUs divided by torchrun's ``LOCAL_WORLD_SIZE``."""
    return 1 if n_images < MIN_IMAGES_FOR_WORKERS else worker_count()


def decode_files(files: list[Path], pixels: bool) -> list[np.ndarray | str | None]:
    """Worker entry point: each file's pixels (``pixels``; else None), or the message naming why it
    does not decode — returned rather than raised, so a worker names a bad file as this process does."""
    results: list[np.ndarray | str | None] = []
    for path in files:
        try:
            image = decode_image(path)
        except UserError as error:
            results.append(str(error))
            continue
        results.append(image if pixels else None)
    return results


class Decoder:
    """Decodes batches of image files, in order: in ``workers`` processes, or in this one when 1.

    Workers start with "forkserver" ("spawn" where it does not exist): a forked child would inherit
    the parent's torch (and CUDA) threads in an undefined state. They import this light module and,
    as every spawn or forkserver child does, re-run the main script's imports (none for ``python -m
    aigc_eval``; a script that imports torch at its top costs each worker ~1.5 s). Use it as a
    context manager; the processes end on exit.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))

    def __enter__(self) -> Decoder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if isinstance(error, BrokenProcessPool):
            raise BrokenProcessPool(
                f"an image decoding process died ({error}); if this runs from a script, guard its "
                f"top-level code with `if __name__ == '__main__':`, or set {WORKERS_ENV}=1 to decode "
                f"in this process"
            ) from error

    def images(self, files: Sequence[Path], batches: Sequence[Sequence[int]]) -> Iterator[list[np.ndarray]]:
        """The decoded images of each batch of positions in ``files``, in order; with workers, up to
        ``_PREFETCH`` batches per worker are decoded ahead (bounded memory) while the caller works.
        The files were checked before: one that no longer decodes is a ``UserError`` naming it."""
        for batch in self._map(files, batches, pixels=True):
            problem = next((item for item in batch if isinstance(item, str)), None)
            if problem is not None:
                raise UserError(problem)
            yield [item for item in batch if isinstance(item, np.ndarray)]

    def problems(self, files: Sequence[Path], chunks: Sequence[Sequence[int]]) -> Iterator[list[str | None]]:
        """Per chunk of positions, each file's decoding problem (None: it decodes)."""
        for chunk in self._map(files, chunks, pixels=False):
            yield [item if isinstance(item, str) else None for item in chunk]

    def _map(
        self, files: Sequence[Path], batches: Sequence[Sequence[int]], pixels: bool
    ) -> Iterator[list[np.ndarray | str | None]]:
        if self._pool is None:
            for batch in batches:
                yield decode_files([files[i] for i in batch], pixels)
            return
        waiting = iter(batches)
        pending: deque[Future[list[np.ndarray | str | None]]] = deque()
        for batch in waiting:
            pending.append(self._pool.submit(decode_files, [files[i] for i in batch], pixels))
            if len(pending) >= _PREFETCH * self.workers:
                break
        while pending:
            done = pending.popleft().result()
            following = next(waiting, None)
            if following is not None:
                pending.append(self._pool.submit(decode_files, [files[i] for i in following], pixels))
            yield done


def readable_positions(
    images: ImageSet, skip_corrupt: bool = False, decoder: Decoder | None = None
) -> tuple[list[int], list[Path]]:
    """Decode every image once (in ``decoder``'s workers; None: here); the positions that decode, and
    the files that do not.

    Without ``skip_corrupt`` any unreadable file is a ``UserError`` listing the bad files; with it
    they are dropped with a warning that gives the count.
    """
    decoder = decoder or Decoder(1)
    size = max(1, math.ceil(len(images) / (_CHECK_CHUNKS_PER_WORKER * decoder.workers)))
    chunks = [range(start, min(start + size, len(images))) for start in range(0, len(images), size)]
    problems = [problem for chunk in decoder.problems(images.files, chunks) for problem in chunk]
    keep = [i for i, problem in enumerate(problems) if problem is None]
    bad = [(images.files[i], problem) for i, problem in enumerate(problems) if isinstance(problem, str)]
    skipped = [path for path, _ in bad]
    if bad and not skip_corrupt:
        shown = "; ".join(message for _, message in bad[:_SHOWN_BAD])
        more = f" (and {len(bad) - _SHOWN_BAD} more)" if len(bad) > _SHOWN_BAD else ""
        raise UserError(f"{images.source}: {len(bad)} unreadable image(s): {shown}{more}")
    if bad:
        warn_skipped(images.source, skipped)
    return keep, skipped


def validate(images: ImageSet, skip_corrupt: bool = False) -> tuple[ImageSet, list[Path]]:
    """``readable_positions`` as the readable subset (a set with none is a ``UserError``) and the
    skipped files; large sets are decoded in worker processes."""
    with Decoder(decode_workers(len(images))) as decoder:
        keep, skipped = readable_positions(images, skip_corrupt, decoder)
    if not keep:
        raise UserError(f"{images.source}: none of its {len(images)} images could be read")
    return images.subset(keep), skipped


def warn_skipped(source: Path, skipped: Sequence[Path]) -> None:
    names = ", ".join(p.name for p in skipped[:_SHOWN_BAD])
    warnings.warn(f"{source}: skipped {len(skipped)} unreadable image(s): {names}", stacklevel=3)


def batch_positions(keep: Sequence[int], batch_size: int) -> list[list[int]]:
    """The network's batches: batch k holds the readable positions among ``k·b … (k+1)·b − 1`` of the
    set, ``b`` the batch size (``keep`` ascending).

    Blocks of set positions, not of readable images: a shard made of whole blocks
    (``shard_positions``) then gets exactly the batches of the whole set, so its features are the
    whole set's bit for bit even on backbones whose numerics depend on the batch (CPU convolutions at
    batch size 1, cuDNN's per-shape kernels).
    """
    blocks: dict[int, list[int]] = {}
    for position in keep:
        blocks.setdefault(position // batch_size, []).append(position)
    return list(blocks.values())


def shard_positions(size: int, batch_size: int, shard: tuple[int, int]) -> list[int]:
    """The positions of shard ``(index, count)`` of a set of ``size`` images: its blocks of
    ``batch_size`` positions ``index, index + count, …`` (strided by batch, so shards differ by at most
    one batch and every batch is one the whole set would run)."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {shard}: need 0 <= index < count")
    blocks = range(index, math.ceil(size / batch_size), count)
    return [i for block in blocks for i in range(block * batch_size, min(size, (block + 1) * batch_size))]


def load_stats(path: str | Path) -> tuple[FeatureSet, dict[str, str]]:
    """Read ``features`` (+ ``logits``) or pytorch-fid's ``mu``/``sigma`` from an ``.npz``.

    Also returns the provenance that ``aigc-eval stats`` stores as ``meta_*`` strings
    (backbone, weights hash, preprocessing); it is empty for a pytorch-fid file.
    """
    from aigc_eval.metrics.image import FeatureSet, as_gaussian, covariance_problem

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


# ---------------------------------------------------------------- one side of a scoring, in shards


@dataclass(frozen=True)
class SidePart:
    """What one process extracted of one side (``role``: generated or reference): the whole set, or
    shard ``(index, count)`` of it. Picklable and compact (numpy arrays and strings) for
    ``torch.distributed.gather_object``; ``merge_parts`` puts the parts of all shards back together.

    For images: the features (and logits) of the shard's images that decoded, their ``positions`` in
    the whole set, the skipped files (full paths, with their positions), the backbone's identity,
    signature origin and device. An ``.npz`` side (``kind`` "stats") cannot be split: shard 0 holds
    its contents (``stats``) and provenance (``meta``), the other shards nothing.
    """

    role: str
    source: str  # the set as given: folder, list file or .npz
    kind: Literal["images", "stats"]
    shard: tuple[int, int]
    size: int  # images in the whole set (0 for an .npz)
    positions: np.ndarray  # int64, one per feature row
    features: np.ndarray  # rows × d: float32 where that holds the values exactly, else float64
    logits: np.ndarray | None = None
    skipped_positions: tuple[int, ...] = ()
    skipped: tuple[str, ...] = ()
    stats: FeatureSet | None = None
    meta: dict[str, str] | None = None
    identity: str | None = None
    origin: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Side:
    """One whole side of a scoring: its feature set, the skipped files (None for an ``.npz``), and
    where the features come from (``meta`` for an ``.npz``; backbone identity, origin, device for images)."""

    role: str
    source: str
    features: FeatureSet
    skipped: list[str] | None
    meta: dict[str, str] | None
    identity: str | None
    origin: str | None
    device: str | None


def extract_side(
    path: str | Path,
    role: str,
    backbone: str | Backbone,
    backbone_path: str | Path | None = None,
    device: str = "auto",
    cache_dir: CacheDir = None,
    skip_corrupt: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> SidePart:
    """Shard ``(index, count)`` of one side: an ``.npz`` read whole on shard 0 (empty on the others), or
    the features of the images at ``shard_positions`` of the set (``count`` 1: all of them).

    ``backbone`` is a name, or a built backbone to share between sides (its network loads once).
    The feature cache is keyed by the shard's own image hashes, so a rerun with the same number of
    shards hits it. Only the shard's files are hashed and decoded. With one shard a set of fewer than
    2 readable images fails here, before the other side is extracted.
    """
    index, count = shard
    name = backbone if isinstance(backbone, str) else backbone.name
    no_rows = np.zeros(0, np.int64)
    if is_stats_file(path):
        if index != 0:
            return SidePart(role, str(path), "stats", shard, 0, no_rows, np.zeros((0, 0)))
        stats, meta = load_stats(path)
        check_stats_meta(Path(path), meta, name)
        return SidePart(role, str(path), "stats", shard, 0, no_rows, np.zeros((0, 0)), stats=stats, meta=meta)
    files = list_image_files(path)
    network = get_backbone(name, backbone_path, device) if isinstance(backbone, str) else backbone
    taken = np.array(shard_positions(len(files), network.batch_size, shard), dtype=np.int64)
    rows, skipped = no_rows, no_rows
    features, logits = np.zeros((0, network.feature_dim), np.float32), None
    if len(taken):
        part = ImageSet.hashed(path, [files[i] for i in taken])
        cache = None if cache_dir is False else FeatureCache(cache_dir)
        extracted = extract_features(network, part, cache, skip_corrupt)
        kept = np.array(extracted.positions, dtype=np.int64)
        rows, skipped = taken[kept], np.delete(taken, kept)
        features, logits = _compact(extracted.features), extracted.logits
    if count == 1:
        _require_two(path, len(rows))
    return SidePart(
        role,
        str(path),
        "images",
        shard,
        len(files),
        rows,
        features,
        None if logits is None else _compact(logits),
        tuple(skipped.tolist()),
        tuple(str(files[i]) for i in skipped),
        identity=network.identity,
        origin=network.origin,
        device=str(network.device),
    )


def merge_parts(parts: Sequence[SidePart]) -> Side:
    """The side that one part per shard makes, rows in set order and skipped files in set order:
    exactly what extracting the whole set in one process gives.

    A ``ValueError`` when the parts are not one per shard of one set (a bug in the caller); a
    ``UserError`` when the set has fewer than 2 readable images.
    """
    if not parts:
        raise ValueError("merge_parts needs the part of every shard, got none")
    first = parts[0]
    count = first.shard[1]
    if sorted(p.shard for p in parts) != [(i, count) for i in range(count)] or any(
        (p.role, p.source, p.kind) != (first.role, first.source, first.kind) for p in parts
    ):
        shards = [(p.role, p.source, p.shard) for p in parts]
        raise ValueError(f"merge_parts needs one part per shard of one side, got {shards}")
    if first.kind == "stats":
        whole = next(p for p in parts if p.shard[0] == 0)
        assert whole.stats is not None and whole.meta is not None
        return Side(first.role, first.source, whole.stats, None, whole.meta, None, None, None)
    from aigc_eval.metrics.image import FeatureSet

    positions = np.concatenate([p.positions for p in parts])
    skipped = sorted((i, name) for p in parts for i, name in zip(p.skipped_positions, p.skipped, strict=True))
    if sorted([*positions.tolist(), *(i for i, _ in skipped)]) != list(range(first.size)):
        raise ValueError(f"{first.source}: the parts do not cover the set's {first.size} images once each")
    identities = {p.identity for p in parts}
    if len(identities) > 1:
        differ = " vs ".join(sorted(map(str, identities)))
        raise UserError(
            f"{first.source}: the shards were featurised differently ({differ}); "
            f"every process must load the same backbone weights"
        )
    _require_two(first.source, len(positions))
    order = np.argsort(positions, kind="stable")
    features = np.concatenate([p.features for p in parts]).astype(np.float64)[order]
    with_rows = [p for p in parts if len(p.positions)]
    logits = None
    if all(p.logits is not None for p in with_rows):
        logits = np.concatenate([p.logits for p in with_rows]).astype(np.float64)[order]
    devices = ", ".join(dict.fromkeys(str(p.device) for p in parts))
    return Side(
        first.role,
        first.source,
        FeatureSet.from_features(features, logits),
        [name for _, name in skipped],
        None,
        first.identity,
        first.origin,
        devices,
    )


def _require_two(source: str | Path, readable: int) -> None:
    if readable < 2:
        raise UserError(f"{source}: {readable} readable image(s); image metrics need at least 2")


def _compact(values: np.ndarray) -> np.ndarray:
    """float32 when that holds every value exactly (the networks' own precision), else as is: half the
    bytes through ``gather_object``, no value changed."""
    single = values.astype(np.float32)
    return single if np.array_equal(single, values) else values


def check_stats_meta(path: Path, meta: dict[str, str], backbone: str) -> None:
    """An ``.npz`` made by ``aigc-eval stats`` must record its provenance and come from ``backbone``."""
    if not meta:
        return
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise UserError(f"{path}: provenance incomplete (no meta_{', meta_'.join(missing)}); rewrite it")
    if meta.get("backbone") != backbone:
        raise UserError(
            f"{path}: was computed with backbone {meta.get('backbone')}; pass --backbone "
            f"{meta.get('backbone')} or recompute it with aigc-eval stats --backbone {backbone}"
        )


def sides_origin(sides: Sequence[Side]) -> str:
    """Backbone/weights/resize for signatures; ``.npz`` sides must agree with each other and the backbone."""
    images = [side for side in sides if side.meta is None]
    known = list(dict.fromkeys(str(side.identity) for side in images))
    for side in sides:
        if side.meta:
            meta = side.meta
            known.append(f"{meta['backbone']}|weights:{meta['weights_sha256']}|{meta['preprocessing']}")
        elif side.meta is not None:
            warnings.warn(
                f"{side.role} statistics carry no provenance (e.g. from pytorch-fid); they compare only "
                f"if made with the same network and resize as the other side",
                stacklevel=4,  # the caller of score_images / score_parts
            )
    if len(set(known)) > 1:
        raise UserError(
            "the two sides were featurised differently (backbone weights or preprocessing differ): "
            + " vs ".join(sorted(set(known)))
            + "; recompute the .npz with aigc-eval stats and the same --backbone/--backbone-path"
        )
    if images:
        origin = str(images[0].origin)
    else:
        meta = next((side.meta for side in sides if side.meta), None)
        origin = (
            f"backbone:{meta['backbone']}|weights:{meta['weights_sha256'][:12]}|resize:{meta['resize']}"
            if meta
            else "backbone:unknown|weights:unknown|resize:unknown"
        )
    if any(side.meta == {} for side in sides):
        origin += "|stats:external-npz"
    return origin
