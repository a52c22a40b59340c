"""The image scoring step: load both image sets, extract features (cached), call the image metrics.

Either side may be an image folder, a list file, or an ``.npz`` (pytorch-fid's ``mu``/``sigma``,
or the ``features`` that ``save_stats`` writes). Image sets go through one backbone (looked up in
``aigc_eval.features.backbones``); the metrics are the registered image metrics
(``aigc_eval.metrics.image.metrics``), built with the reference set and the features' origin in
their ``MetricContext``.

Scoring is two steps, so that torchrun ranks can share the extraction: ``extract_side`` (one shard
of one side, in any process) and ``score_parts`` (rank 0: the parts of every shard merged by
position, then the metrics). ``score_images`` and ``score_image_task`` are both steps in one process,
with one shard; any number of shards gives the same outcome exactly.

A run folder keeps each image row × task's features (``save_image_features``):
``features/<row>__<task>.npz`` holds the generated set's per-image features (and logits) as float32
(as in the feature cache), ``features/<task>__reference.npz`` the reference's, once per task; a
statistics-only side stores ``mu``/``sigma``. ``stored_image_metrics`` turns them back into the task's
image metrics with their rows, which is what ``compare`` resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aigc_eval import __version__
from aigc_eval.errors import UserError
from aigc_eval.features import backbones, extract_features, get_backbone
from aigc_eval.features.cache import FeatureCache
from aigc_eval.files import write_npz_atomic
from aigc_eval.images import (
    CacheDir,
    Side,
    SidePart,
    extract_side,
    is_stats_file,
    merge_parts,
    open_image_set,
    sides_origin,
)
from aigc_eval.metrics.base import MetricContext, Score, StoredMetric
from aigc_eval.metrics.image import FeatureSet, mean_and_covariance
from aigc_eval.metrics.image.base import ImageMetric
from aigc_eval.metrics.image.labels import INCEPTION, metric_label
from aigc_eval.metrics.registry import IMAGE_METRIC_NAMES, build_metric, metrics
from aigc_eval.record import ImageFeatureFiles, ResultEntry, RunRecord, SkippedImages
from aigc_eval.run_folder import RunFolder

if TYPE_CHECKING:
    from aigc_eval.config import Task
    from aigc_eval.features.base import Backbone


@dataclass(frozen=True)
class StatsSummary:
    """What ``save_stats`` wrote."""

    path: Path
    n: int
    dim: int
    backbone: str
    skipped: int


@dataclass(frozen=True)
class ImageOutcome:
    """One generated set scored against a reference: scores keyed by their output name
    (``fd_efficientnet-lite0``), both feature sets (the run folder keeps them for compare), the
    files skipped as unreadable per side, and where the backbone ran (None: no network ran, both
    sides were ``.npz`` statistics)."""

    scores: dict[str, Score]
    generated: FeatureSet
    reference: FeatureSet | None
    skipped: dict[str, list[str]] = field(default_factory=dict)
    device: str | None = None
    source: str | None = None  # the generated set scored (folder, list file or .npz), as given

    def skipped_images(self) -> dict[str, SkippedImages]:
        """The skipped files per side, as results.json records them."""
        return {role: SkippedImages(count=len(names), files=names) for role, names in self.skipped.items()}


def image_metric_class(name: str) -> type[ImageMetric]:
    """The registered image metric ``name``; a user error naming the known ones otherwise."""
    cls = metrics.get(name) if name in metrics else None
    if cls is None or not issubclass(cls, ImageMetric):
        plugins = [n for n in metrics.names() if n not in IMAGE_METRIC_NAMES]
        known = [*IMAGE_METRIC_NAMES, *(n for n in plugins if issubclass(metrics.get(n), ImageMetric))]
        raise UserError(f"unknown image metric(s) {name}; known: {', '.join(known)}")
    return cls


def check_request(names: Sequence[str], backbone: str) -> list[str]:
    """The metric list, deduplicated in order; a UserError for unknown names or impossible pairs."""
    if not names:
        raise UserError("no image metric given; choose an image metric such as fid, kid or precision")
    classes = {name: image_metric_class(name) for name in dict.fromkeys(names)}
    backbone_class = backbones.get(backbone)
    for name, cls in classes.items():
        if cls.rows_from == "logits" and not backbone_class.has_logits:
            with_logits = [n for n, b in backbones.load_all().items() if b.has_logits]
            raise UserError(
                f"metric {name!r} needs class logits, which backbone {backbone} does not give; use a "
                f"backbone with logits ({', '.join(with_logits)}), e.g. --backbone efficientnet-lite0 "
                f"for an Inception-Score-style score (reported as is_efficientnet-lite0)"
            )
        if cls.backbones and backbone not in cls.backbones:
            raise UserError(f"metric {name!r} {cls.backbone_rule}")
    return list(classes)


def build_image_metrics(
    names: Sequence[str], backbone: str, seed: int, reference: FeatureSet | None, origin: str | None
) -> list[ImageMetric]:
    """The image metrics of a task, each holding the reference side and the features' origin."""
    context = MetricContext(reference=reference, origin=origin)
    built = [build_metric(name, {"backbone": backbone, "seed": seed}, context=context) for name in names]
    return [metric for metric in built if isinstance(metric, ImageMetric)]


def score_feature_sets(gen: FeatureSet, built: Sequence[ImageMetric]) -> dict[str, Score]:
    """Each metric's score of the generated set with its own interval, keyed by output name."""
    scores: dict[str, Score] = {}
    for metric in built:
        scores.update(metric.with_intervals(metric.score_set(gen), gen))
    return scores


def needs_reference(metric_names: Sequence[str]) -> bool:
    """Whether any of these image metrics compares against a reference set (all but ``is``); without
    one the reference side is neither extracted nor scored."""
    return any(image_metric_class(name).needs_reference for name in metric_names)


def score_images(
    generated: str | Path,
    reference: str | Path | None,
    metric_names: Sequence[str],
    backbone: str = "inception-v3-tf",
    backbone_path: str | Path | None = None,
    device: str = "auto",
    cache_dir: CacheDir = None,
    skip_corrupt: bool = False,
    seed: int = 0,
) -> ImageOutcome:
    """Score a generated set against a reference with the named image metrics (``fid``, ``kid``...).

    ``reference`` may be None when only metrics without a reference (``is``) are asked for.
    ``cache_dir`` None is the default cache folder, False disables the cache. ``seed`` drives KID's
    subsets, FID∞'s subsamples and FID's draws. Each score carries its own interval (or the reason
    it has none in ``ci_unavailable``).
    """
    names = check_request(metric_names, backbone)
    generated_part, reference_part = _extract_both(
        generated, reference, names, backbone, backbone_path, device, cache_dir, skip_corrupt
    )
    return _score_sides(
        names, backbone, seed, [generated_part], None if reference_part is None else [reference_part]
    )


def score_image_task(
    generated: str | Path,
    reference: str | Path | None,
    task: Task,
    device: str = "auto",
    seed: int = 0,
    backbone_path: str | Path | None = None,
    cache_dir: CacheDir = None,
) -> ImageOutcome:
    """One image row × task in one process: ``extract_side`` of each side (one shard) and ``score_parts``.

    ``generated``, ``reference`` and ``backbone_path`` are resolved paths (the task's own are
    relative to the suite file); ``seed`` is the suite's seed.
    """
    names = check_request(task.image_metrics, task.backbone)
    generated_part, reference_part = _extract_both(
        generated,
        reference if task.reference is not None else None,
        names,
        task.backbone,
        backbone_path,
        device,
        cache_dir,
        task.skip_corrupt,
    )
    return score_parts([generated_part], None if reference_part is None else [reference_part], task, seed)


def score_parts(
    generated_parts: Sequence[SidePart],
    reference_parts: Sequence[SidePart] | None,
    task: Task,
    seed: int = 0,
) -> ImageOutcome:
    """Everything ``score_image_task`` does after extraction, from the ``extract_side`` parts of every
    shard of each side (in any order): merged by position, checked, scored with intervals. Equal to
    ``score_image_task`` exactly. ``reference_parts`` is None when the task has no reference or
    ``needs_reference`` says its metrics use none (the parts are then ignored)."""
    names = check_request(task.image_metrics, task.backbone)
    return _score_sides(names, task.backbone, seed, generated_parts, reference_parts)


def _extract_both(
    generated: str | Path,
    reference: str | Path | None,
    names: Sequence[str],
    backbone: str,
    backbone_path: str | Path | None,
    device: str,
    cache_dir: CacheDir,
    skip_corrupt: bool,
) -> tuple[SidePart, SidePart | None]:
    """Both sides as one shard each, through one backbone built on first use (none for two ``.npz``)."""
    _require_reference(names, reference is not None)
    network: Backbone | None = None
    parts: list[SidePart | None] = []
    for role, path in (("generated", generated), ("reference", reference)):
        if path is None or (role == "reference" and not needs_reference(names)):
            parts.append(None)
            continue
        if network is None and not is_stats_file(path):
            network = get_backbone(backbone, backbone_path, device)
        parts.append(
            extract_side(path, role, network or backbone, backbone_path, device, cache_dir, skip_corrupt)
        )
    assert parts[0] is not None
    return parts[0], parts[1]


def _require_reference(names: Sequence[str], has_reference: bool) -> None:
    pair = [name for name in names if image_metric_class(name).needs_reference]
    if pair and not has_reference:
        raise UserError(f"metric(s) {', '.join(pair)} need a reference set")


def _score_sides(
    names: Sequence[str],
    backbone: str,
    seed: int,
    generated_parts: Sequence[SidePart],
    reference_parts: Sequence[SidePart] | None,
) -> ImageOutcome:
    _require_reference(names, bool(reference_parts))
    gen = merge_parts(generated_parts)
    ref = merge_parts(reference_parts) if reference_parts and needs_reference(names) else None
    sides: list[Side] = [gen] if ref is None else [gen, ref]
    ref_set = None if ref is None else ref.features
    built = build_image_metrics(names, backbone, seed, ref_set, sides_origin(sides))
    _check_contents(gen.features, ref_set, built, gen.source, None if ref is None else ref.source)
    scores = score_feature_sets(gen.features, built)
    skipped = {side.role: side.skipped for side in sides if side.skipped is not None}
    device = next((side.device for side in sides if side.device is not None), None)
    return ImageOutcome(scores, gen.features, ref_set, skipped, device, gen.source)


def _check_contents(
    gen: FeatureSet,
    ref: FeatureSet | None,
    built: list[ImageMetric],
    generated: str | Path,
    reference: str | Path | None,
) -> None:
    """Input problems named by file, before any metric runs: dimensions, statistics-only sides,
    logits, and sample counts (each metric's minimum and the k of its k-NN balls)."""
    if ref is not None and gen.dim != ref.dim:
        raise UserError(
            f"{generated} has {gen.dim}-d features but {reference} has {ref.dim}-d; both sides must come "
            f"from the same backbone"
        )
    sides = (("generated", generated, gen), ("reference", reference, ref))
    for role, path, side in sides:
        needed = [m.name for m in built if role in m.features_needed]
        if side is not None and side.features is None and needed:
            raise UserError(
                f"{path}: holds only mu/sigma, but {', '.join(needed)} need(s) per-image features; pass the "
                f"image folder, or an .npz written by 'aigc-eval stats' (it stores features)"
            )
    for metric in built:
        if metric.rows_from == "logits" and gen.logits is None:
            raise UserError(
                f"{generated}: has no class logits for {metric.name!r}; pass images or stats made with logits"
            )
        problem = metric.size_problem(gen)
        if problem is not None:
            raise UserError(f"{generated}: {problem}")
    for role, path, side in reversed(sides):
        k_nn = {m.name: m.knn[role] for m in built if role in m.knn}
        if side is not None and side.n is not None and k_nn and side.n <= max(k_nn.values()):
            manifold = [m.name for m in built if m.knn]
            raise UserError(
                f"{path}: {side.n} images; {', '.join(manifold)} need more than {max(k_nn.values())}"
            )


def save_stats(
    path_in: str | Path,
    out_npz: str | Path,
    backbone: str = "inception-v3-tf",
    backbone_path: str | Path | None = None,
    device: str = "auto",
    cache_dir: CacheDir = None,
    skip_corrupt: bool = False,
) -> StatsSummary:
    """Write ``mu``/``sigma`` (pytorch-fid's keys), ``features``, ``logits`` and provenance to ``.npz``."""
    out = Path(out_npz)
    if not is_stats_file(out):
        raise UserError(f"{out}: the output must end in .npz")
    network = get_backbone(backbone, backbone_path, device)
    cache = None if cache_dir is False else FeatureCache(cache_dir)
    extracted = extract_features(network, open_image_set(path_in), cache, skip_corrupt)
    features = extracted.features
    if len(features) < 2:
        raise UserError(f"{path_in}: {len(features)} readable image(s); statistics need at least 2")
    mu, sigma = mean_and_covariance(features)
    arrays: dict[str, np.ndarray] = {
        "mu": mu,
        "sigma": sigma,
        "features": features,
        "n": np.array(len(features)),
        "meta_backbone": np.array(network.name),
        "meta_weights_sha256": np.array(network.weights_sha256),
        "meta_preprocessing": np.array(network.preprocessing),
        "meta_resize": np.array(network.resize),
        "meta_source": np.array(str(path_in)),
        "meta_aigc_eval_version": np.array(__version__),
    }
    if extracted.logits is not None:
        arrays["logits"] = extracted.logits
    write_npz_atomic(out, arrays)
    return StatsSummary(out, len(features), features.shape[1], network.name, len(extracted.skipped))


# ---------------------------------------------------------------- run-folder features, for compare

DEFAULT_IMAGE_METRICS = ("fid", "kid")  # config.Task's default, for suites that leave it out


def feature_arrays(feature_set: FeatureSet) -> dict[str, np.ndarray]:
    """What a feature file holds for one set: per-image features (float32), else mu/sigma; logits."""
    if feature_set.features is None:
        arrays = {"mu": feature_set.mu, "sigma": feature_set.sigma}
    else:
        arrays = {"features": feature_set.features.astype(np.float32)}
    if feature_set.logits is not None:
        arrays["logits"] = feature_set.logits.astype(np.float32)
    return arrays


def feature_set_of(arrays: dict[str, np.ndarray], where: str) -> FeatureSet:
    """The set a feature file written by ``save_image_features`` holds (``where`` names the file)."""
    logits = arrays["logits"].astype(np.float64) if "logits" in arrays else None
    try:
        if "features" in arrays:
            return FeatureSet.from_features(arrays["features"].astype(np.float64), logits)
        return FeatureSet(arrays["mu"], arrays["sigma"], None, None, logits)
    except (KeyError, ValueError) as error:
        raise UserError(f"{where}: not a readable feature file ({error}); re-run the suite") from None


def save_image_features(
    folder: RunFolder, row: str, task: str, outcome: ImageOutcome, write_reference: bool
) -> ImageFeatureFiles:
    """Keep the generated set's features (and the reference's when ``write_reference``: once per task)
    in the run folder, so ``compare`` can resample them later; returns the files as results.json
    names them (relative to the folder)."""
    generated = folder.features_name(row, task)
    folder.save_arrays(generated, feature_arrays(outcome.generated))
    if outcome.reference is None:
        return ImageFeatureFiles(generated=generated)
    reference = folder.reference_features_name(task)
    if write_reference:
        folder.save_arrays(reference, feature_arrays(outcome.reference))
    return ImageFeatureFiles(generated=generated, reference=reference)


def _origin(entry: ResultEntry, label: str) -> str | None:
    """The features' origin as the stored signature ``<label>|<origin>|n_gen:...`` records it."""
    stored = entry.metrics.get(label)
    if stored is None or not stored.signature.startswith(f"{label}|") or "|n_gen:" not in stored.signature:
        return None
    return stored.signature[len(label) + 1 :].split("|n_gen:", 1)[0]


def _stored_sets(folder: RunFolder, entry: ResultEntry) -> tuple[FeatureSet, FeatureSet | None] | str:
    """The generated and reference sets of an entry, or why the run folder does not have them."""
    files = entry.features
    if files is None or files.generated is None:
        return (
            f"{folder.path} keeps no image features for this row (made by an older version); "
            "re-run the suite to test image metrics"
        )
    names = [name for name in (files.generated, files.reference) if name is not None]
    missing = [name for name in names if not folder.file(*Path(name).parts).is_file()]
    if missing:
        return f"{folder.path}: {', '.join(missing)} missing; re-run the suite to test image metrics"
    generated = feature_set_of(folder.load_arrays(files.generated), files.generated)
    reference = None
    if files.reference is not None:
        reference = feature_set_of(folder.load_arrays(files.reference), files.reference)
    return generated, reference


def stored_image_metrics(folder: RunFolder, record: RunRecord, model: str, task: str) -> list[StoredMetric]:
    """The image metrics of ``model`` × ``task`` rebuilt from the run folder: each with the generated
    set's rows and the run's reference in its context, or the reason it cannot be resampled
    (``unavailable``, keyed by output name: no saved features, statistics only, not resamplable)."""
    entry = record.entry(model, task)
    if entry is None:
        raise UserError(f"{folder.path}: no results for row {model!r} on task {task!r}")
    config = next((t for t in record.suite.get("tasks", []) if t.get("name") == task), {})
    names = config.get("image_metrics") or list(DEFAULT_IMAGE_METRICS)
    options = {"backbone": config.get("backbone") or INCEPTION, "seed": int(record.suite.get("seed", 0))}
    sets = _stored_sets(folder, entry)
    stored = []
    for name in names:
        reference = sets[1] if not isinstance(sets, str) else None
        origin = _origin(entry, metric_label(name, options["backbone"]))
        metric = build_metric(name, options, context=MetricContext(reference=reference, origin=origin))
        assert isinstance(metric, ImageMetric)
        if isinstance(sets, str):
            stored.append(StoredMetric(metric, np.zeros((0, 0)), None, {metric.label: sets}))
            continue
        rows = metric.rows_of(sets[0])
        problem = metric.resampling_problem(sets[0])
        unavailable = {} if problem is None else {metric.label: problem}
        stored.append(StoredMetric(metric, np.zeros((0, 0)) if rows is None else rows, None, unavailable))
    return stored
