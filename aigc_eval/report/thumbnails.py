"""Image tasks in report.html: the first images of the reference set and of each row's generated set,
downscaled and embedded as PNG data: URIs (the page's CSP allows ``img-src data:``).

The image modules (and PIL) are imported only when a run has an image task, so a text-only report
needs neither.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigc_eval.errors import UserError
from aigc_eval.record import RunRecord
from aigc_eval.report.sections import image_tasks, skipped_text

THUMB_PX = 64  # thumbnails fit in a THUMB_PX square (report.css sizes .thumbs img to match)
MAX_THUMBS = 12  # per image set (reference or a row's generated images): the first ones, in file order


@dataclass(frozen=True)
class Thumb:
    name: str
    src: str | None  # a data: URI, or None when the file could not be read


@dataclass(frozen=True)
class ImageSetView:
    label: str
    color: str
    path: str | None
    skipped: str = ""
    note: str = ""  # shown instead of thumbnails (statistics, missing, unreadable)
    count: str = ""  # '12 of 100'
    thumbs: list[Thumb] = field(default_factory=list)


def thumbnails(record: RunRecord, rows: list[str], colors: dict[str, str]) -> list[dict[str, Any]]:
    """Per image task: the reference set, then each row's generated set."""
    tasks = []
    for task in image_tasks(record):
        info = record.tasks[task]
        sets = [image_set("reference", "", info.path)]
        for row in rows:
            entry = record.entry(row, task)
            if entry is not None:
                sets.append(image_set(row, colors[row], entry.generated_images, skipped_text(entry)))
        tasks.append({"name": task, "facts": f"n={info.n} · backbone {info.backbone or '?'}", "sets": sets})
    return tasks


def image_set(label: str, color: str, path: str | None, skipped: str = "") -> ImageSetView:
    """One labelled grid; a note instead when the set is statistics, missing or unreadable."""
    from aigc_eval.images import is_stats_file, list_image_files

    if not path:
        return ImageSetView(label, color, path, skipped, note="no image set recorded for this row")
    if is_stats_file(path):
        return ImageSetView(label, color, path, skipped, note="reference given as statistics, no images")
    if not Path(path).exists():
        note = f"images not shown: {path} is not here (was the run folder moved?)"
        return ImageSetView(label, color, path, skipped, note=note)
    try:
        files = list_image_files(path)  # listed in scoring order, never read whole (only 12 are shown)
    except (UserError, OSError, ValueError) as error:
        return ImageSetView(label, color, path, skipped, note=f"images not shown: {error}")
    shown = files[:MAX_THUMBS]
    count = f"{len(shown)} of {len(files)}"
    return ImageSetView(label, color, path, skipped, count=count, thumbs=[thumbnail(f) for f in shown])


def thumbnail(path: Path) -> Thumb:
    """The image downscaled into a THUMB_PX square as a PNG data: URI."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a reduced size
            small = image.convert("RGB")
            small.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            small.save(buffer, format="PNG", optimize=True)
    except Exception:  # one bad file costs its thumbnail, never the report
        return Thumb(path.name, None)
    return Thumb(path.name, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
