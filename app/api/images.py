"""`/image/<key>`: stored images (local or S3), readable cross-origin; and `task_presenter`, the task
as a response shows it, its image URLs in the form the request's path asks for (app/image_modes.py)."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Blueprint, Response

from app.api import path_image_mode, services
from app.db import db
from app.errors import TaskNotFound
from app.image_modes import present
from app.image_variants import CELL_KEY, grid_cell
from app.images import CONTENT_TYPES, valid_key
from app.models import Task
from app.schemas import parse_task_id

bp = Blueprint("images", __name__)

#: Stored images never change: let browsers and CDNs keep them for a day.
IMAGE_MAX_AGE_SECONDS = 86_400


@bp.get("/image/<path:key>")
def image(key: str) -> Response:
    found = services()
    data = found.images.get(key) if valid_key(key) else None
    if data is None and (cell := CELL_KEY.match(key)) is not None:
        # A grid's cells are made on their first request (app/image_variants.py).
        task_id = parse_task_id(cell[1])  # bounded: a 30-digit folder name must not reach a bigint column
        task = db.session.get(Task, task_id) if task_id is not None else None
        if task is not None:
            data = grid_cell(found.images, task.id, key, task.action, task.image_url,
                             found.settings.thumbnail_pixels)
    if data is None:
        raise TaskNotFound(f"image {key} not found")
    ext = key.rsplit(".", 1)[-1].lower()
    return Response(data, mimetype=CONTENT_TYPES.get(ext, "application/octet-stream"), headers={
        "Access-Control-Allow-Origin": "*",
        "Cache-Control": f"public, max-age={IMAGE_MAX_AGE_SECONDS}, immutable",
    })


def task_presenter() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A task object (Task.to_json()) -> the same with its image URLs in the image mode of the mount (or key)
    this request came through. The mode, store and proxy URL are looked up once, not once per task of a list."""
    found = services()
    return partial(present, mode=path_image_mode(), images=found.images, proxy_url=found.settings.image_proxy_url)
