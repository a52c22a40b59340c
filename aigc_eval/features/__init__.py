"""Feature backbones by name (a plug-in registry), and cached, batched extraction of an image set's features.

Importing this package is light (no torch, numpy, PIL or scipy): ``BACKBONE_NAMES``
serves as a config-schema choice; a backbone's module (torch) loads when it is looked up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aigc_eval.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch

    from aigc_eval.features.base import Backbone
    from aigc_eval.features.cache import FeatureCache
    from aigc_eval.images import ImageSet

# Built-in backbones by the module that registers each; the names are a config-schema choice.
_BUILTINS = {
    "inception-v3-tf": "aigc_eval.features.inception",
    "efficientnet-lite0": "aigc_eval.features.efficientnet",
    "clip": "aigc_eval.features.hf_vision",
    "dinov2": "aigc_eval.features.hf_vision",
}
BACKBONE_NAMES: tuple[str, ...] = tuple(_BUILTINS)

# Adding a backbone is one file: a ``Backbone`` subclass decorated with ``@backbones.register(name)``,
# taking ``(path, device)``; third-party packages register through the ``aigc_eval.backbones``
# entry-point group.
backbones: Registry[type[Backbone]] = Registry("backbone", "aigc_eval.backbones", builtins=_BUILTINS)


def get_backbone(name: str, path: str | Path | None = None, device: str | torch.device = "auto") -> Backbone:
    """The backbone called ``name``; ``path`` overrides its weights (required for clip and dinov2)."""
    return backbones.get(name)(path, device)


@dataclass(frozen=True)
class Extracted:
    """Features of the images that decoded, in set order, and what happened on the way.

    ``positions`` are the rows' indices in the set; ``skipped_names`` the skipped files' paths
    relative to the set (its folder, or the list file's folder), for results and reports;
    ``skipped`` the full paths.
    """

    features: np.ndarray
    logits: np.ndarray | None
    skipped: list[Path]
    cache_hit: bool
    skipped_names: tuple[str, ...]
    positions: tuple[int, ...]


def _relative_names(images: ImageSet, skipped: list[Path]) -> tuple[str, ...]:
    root = images.source if images.source.is_dir() else images.source.parent
    names = []
    for path in skipped:
        try:
            names.append(path.relative_to(root).as_posix())
        except ValueError:  # a list file may name images outside its folder
            names.append(path.as_posix())
    return tuple(names)


def extract_features(
    backbone: Backbone,
    images: ImageSet,
    cache: FeatureCache | None = None,
    skip_corrupt: bool = False,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> Extracted:
    """Features for every image of the set, from the cache when this exact set was seen before.

    On a miss every image is decoded once before the network runs (a bad file fails at once, not
    after hours), then the batches of ``batch_positions`` go through the backbone, the next ones
    decoded in worker processes while it runs, and the result is cached. ``workers`` (decoding
    processes, 1: this one) defaults to ``decode_workers``; every count gives the same features bit
    for bit (same decoding, same batches). With ``skip_corrupt`` a set where nothing decodes gives
    no rows: callers say how many they need. ``progress(done, total)`` is called after each batch.
    """
    import numpy as np

    from aigc_eval.images import (
        Decoder,
        batch_positions,
        decode_workers,
        readable_positions,
        validate,
        warn_skipped,
    )

    if cache is not None:
        hit = cache.load(backbone.identity, images.hashes)
        if hit is not None:
            bad = {i for i, h in enumerate(images.hashes) if h in hit.skipped_hashes}
            skipped = [images.files[i] for i in sorted(bad)]
            if skipped and not skip_corrupt:
                validate(images, skip_corrupt=False)  # raises, naming the unreadable files
            if skipped:
                warn_skipped(images.source, skipped)
            kept = tuple(i for i in range(len(images)) if i not in bad)
            return Extracted(hit.features, hit.logits, skipped, True, _relative_names(images, skipped), kept)
    with Decoder(decode_workers(len(images)) if workers is None else workers) as decoder:
        keep, skipped = readable_positions(images, skip_corrupt, decoder)
        feature_rows: list[np.ndarray] = [np.zeros((0, backbone.feature_dim))]
        logit_rows: list[np.ndarray] = []
        for batch in decoder.images(images.files, batch_positions(keep, backbone.batch_size)):
            features, logits = backbone.embed(batch)
            feature_rows.append(features)
            if logits is not None:
                logit_rows.append(logits)
            if progress is not None:
                progress(sum(len(rows) for rows in feature_rows), len(keep))
    all_features = np.concatenate(feature_rows)
    all_logits = np.concatenate(logit_rows) if logit_rows else None
    if cache is not None:
        skipped_hashes = tuple(sorted(set(images.hashes) - {images.hashes[i] for i in keep}))
        cache.store(backbone.identity, images.hashes, all_features, all_logits, skipped_hashes)
    return Extracted(all_features, all_logits, skipped, False, _relative_names(images, skipped), tuple(keep))
