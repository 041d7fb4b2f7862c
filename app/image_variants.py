"""What is stored beside each final image: a small WebP thumbnail and, for a grid, its four cells.

Midjourney's grid results (imagine, variations, reroll, blend, zoom, pan, vary region) are one
image of 2×2 cells; clients that show "the four pictures" want each cell on its own. The task
carries them under `properties` (the wire format's top-level keys are fixed, and new-api relays
`properties` whole): `thumbnailUrl` and `imageUrls: [{"url", "thumbnail"}, ...]`, trueai's shape.
"""
from __future__ import annotations

import io
import logging
import re
from typing import Any

from PIL import Image, UnidentifiedImageError

from app import protocol
from app.images import ImageStore

log = logging.getLogger(__name__)

#: Results that are a 2×2 grid of four candidate images.
GRID_ACTIONS = frozenset({protocol.IMAGINE, protocol.VARIATION, protocol.REROLL, protocol.BLEND, protocol.ZOOM,
                          protocol.PAN, "INPAINT"})
#: Longest side of a thumbnail, pixels (MJQ_THUMBNAIL_PIXELS overrides it).
THUMBNAIL_PIXELS = 256
#: WebP quality of thumbnails (0-100): small files, still sharp at 256 px.
THUMBNAIL_QUALITY = 80
#: WebP encoding effort, 0 (fastest) to 6 (smallest; Pillow's default is 4), of every WebP mjq and its
#: simulator write. 2 encodes a 512-px progress preview in ~3.6 ms instead of ~9.3, and a 256-px
#: thumbnail in ~3.3 ms instead of ~4.9, for ~4 % more bytes.
WEBP_METHOD = 2
#: zlib's run-length strategy for PNG (Pillow's `compress_type`).
PNG_RLE = 3


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    # Fast, on the job's time: zlib's run-length strategy encodes a cell ~15% faster than level 1 alone
    # and ~20% smaller (bench: 4 cells of a 16:9 grid, 63 → 54 ms, 663 → 518 KiB).
    image.save(out, format="PNG", compress_level=1, compress_type=PNG_RLE)
    return out.getvalue()


def _webp(image: Image.Image, pixels: int) -> bytes:
    small = image.copy()
    small.thumbnail((pixels, pixels), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="WEBP", quality=THUMBNAIL_QUALITY, method=WEBP_METHOD)
    return out.getvalue()


def cells_of(image: Image.Image) -> list[Image.Image]:
    """The four cells of a 2×2 grid, left to right then top to bottom (Midjourney's U1..U4 order)."""
    w, h = image.size
    half_w, half_h = w // 2, h // 2
    return [image.crop((x, y, x + half_w, y + half_h)) for y in (0, half_h) for x in (0, half_w)]


def _decoded(images: ImageStore, key: str, task_id: int) -> Image.Image | None:
    data = images.get(key)
    if data is None:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        log.warning("task %s: %s cannot be decoded, no thumbnail or cells: %s", task_id, key, exc)
        return None
    return image


def _reduced(image: Image.Image, thumbnail_pixels: int) -> Image.Image:
    """The image at twice the thumbnail's size, made once from full size: the grid's thumbnail and its cells'
    come from it."""
    source = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if image.mode in ("LA", "P") else "RGB")
    scale = min(1.0, 2 * thumbnail_pixels / max(source.size))
    size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
    # Reducing by a whole factor first (reducing_gap) halves the cost of a grid's resample (5.6 → 3.2 ms).
    return source.resize(size, Image.Resampling.BOX, reducing_gap=1.0)


def _cell_files(task_id: int, image: Image.Image, reduced: Image.Image, thumbnail_pixels: int
                ) -> dict[str, bytes]:
    """Every cell's PNG and thumbnail, by key."""
    files = {}
    for n, (cell, small) in enumerate(zip(cells_of(image), cells_of(reduced), strict=True), start=1):
        files[f"{task_id}/cell-{n}.png"] = _png(cell)
        files[f"{task_id}/thumb-cell-{n}.webp"] = _webp(small, thumbnail_pixels)
    return files


def store_variants(images: ImageStore, task_id: int, action: str, image_url: str | None,
                   thumbnail_pixels: int = THUMBNAIL_PIXELS, image: Image.Image | None = None) -> dict[str, Any]:
    """Store the thumbnail (and the grid's cells) of the final image at `image_url`, when it is in `images`.

    Returns the task properties that name them (`thumbnailUrl`, `imageUrls`), or {} when the image is
    not one of the store's or cannot be decoded: a missing thumbnail never fails a finished job.
    When mjq serves the store's URLs, the cells are only named here and made by `grid_cell` on their
    first request: encoding four cells and their thumbnails was ~60 % of a worker's CPU per grid job
    (py-spy, bench P3) and most clients never fetch them.
    """
    key = images.key_of(image_url) if image_url else None
    if key is None:
        return {}
    if image is None:  # read back what the driver stored (a driver holding it decoded passes it instead)
        image = _decoded(images, key, task_id)
        if image is None:
            return {}
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    reduced = _reduced(image, thumbnail_pixels)
    properties: dict[str, Any] = {
        "thumbnailUrl": images.put(f"{task_id}/thumb-{stem}.webp", _webp(reduced, thumbnail_pixels)),
    }
    if action in GRID_ACTIONS:
        if not images.served_by_mjq:
            for cell_key, data in _cell_files(task_id, image, reduced, thumbnail_pixels).items():
                images.put(cell_key, data)
        properties["imageUrls"] = [{"url": images.url(f"{task_id}/cell-{n}.png"),
                                    "thumbnail": images.url(f"{task_id}/thumb-cell-{n}.webp")} for n in range(1, 5)]
    return properties


#: The keys `store_variants` names for a grid's cells: `<task id>/cell-<n>.png`, `<task id>/thumb-cell-<n>.webp`.
CELL_KEY = re.compile(r"^(\d+)/(?:cell-[1-4]\.png|thumb-cell-[1-4]\.webp)$")


def grid_cell(images: ImageStore, task_id: int, key: str, action: str, image_url: str | None,
              thumbnail_pixels: int = THUMBNAIL_PIXELS) -> bytes | None:
    """The cell image `key` of task `task_id`'s grid at `image_url`, made from the grid and stored with its
    siblings (the same bytes `store_variants` would have stored), or None when `key` names no cell of it."""
    grid_key = images.key_of(image_url) if image_url else None
    if action not in GRID_ACTIONS or grid_key is None:
        return None
    image = _decoded(images, grid_key, task_id)
    if image is None:
        return None
    files = _cell_files(task_id, image, _reduced(image, thumbnail_pixels), thumbnail_pixels)
    if key not in files:
        return None
    for cell_key, data in files.items():  # each write is atomic: two first requests at once store the same bytes
        images.put(cell_key, data)
    return files[key]
