"""Image URL modes: which form of an image URL a client is shown, chosen by the path it calls or its key.

A mount that names a mode (`/mj-proxy/mj`, `/mj-fast-origin/mj`, ...) decides; on the plain mounts
the calling API key's `imageMode` does (relay for keys that never chose, the bootstrap secret and
open mode). A task remembers the mode it was submitted with (`tasks.image_mode`), so its webhooks
carry the form its submitter reads from fetch.

What is stored never changes (the store's own URL, "relay"); the form is applied when a task is
serialized for a response or a webhook body:
- relay: the stored URL, served by mjq at `MJQ_PUBLIC_URL/mj/image/<key>` (or the bucket's
  MJQ_S3_PUBLIC_URL). It keeps working after the upstream's URL expires.
- origin: the upstream's own URL of the final image (`properties.originImageUrl`, recorded by a
  driver that copied it). Results without one (the simulator, previews, thumbnails, grid cells,
  which exist only in mjq's store) keep their relay URL.
- proxy: `MJQ_IMAGE_PROXY_URL/mj/image/<key>`: the relay URL moved onto a CDN whose origin is mjq.
  Without MJQ_IMAGE_PROXY_URL it is the relay URL.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import ValidationFailed
from app.images import ImageStore
from app.models_tenancy import ApiKey

RELAY, ORIGIN, PROXY = "relay", "origin", "proxy"
IMAGE_MODES = (RELAY, ORIGIN, PROXY)


def parse_image_mode(field: str, value: Any) -> str:
    """`value` when it names an image mode. Raises ValidationFailed (code 4) naming `field`."""
    if value not in IMAGE_MODES:
        raise ValidationFailed(f"{field} must be one of {', '.join(IMAGE_MODES)} (got {value!r})")
    return str(value)


def key_image_mode(session: Session, key_id: str) -> str:
    """The image mode API key `key_id` chose (relay for a key that is gone)."""
    mode = session.scalar(select(ApiKey.image_mode).where(ApiKey.id == key_id))
    return mode if mode in IMAGE_MODES else RELAY


def present(task: dict[str, Any], mode: str, images: ImageStore | None, proxy_url: str = "") -> dict[str, Any]:
    """`task` (a Task.to_json() dict) with its image URLs in `mode`'s form; `task` itself is not changed.

    Without an image store the proxy form cannot find its keys and stays relay.
    """
    if mode == ORIGIN:
        origin = (task.get("properties") or {}).get("originImageUrl")
        if isinstance(origin, str) and origin and task.get("imageUrl"):
            return {**task, "imageUrl": origin}
        return task
    if mode != PROXY or not proxy_url or images is None:
        return task

    def move(url: Any) -> Any:
        key = images.key_of(url) if isinstance(url, str) else None
        return f"{proxy_url.rstrip('/')}/mj/image/{key}" if key else url

    shown = {**task, "imageUrl": move(task.get("imageUrl"))}
    properties = dict(task.get("properties") or {})
    if "thumbnailUrl" in properties:
        properties["thumbnailUrl"] = move(properties["thumbnailUrl"])
    if isinstance(properties.get("imageUrls"), list):
        properties["imageUrls"] = [{k: move(v) for k, v in cell.items()} if isinstance(cell, dict) else move(cell)
                                   for cell in properties["imageUrls"]]
    shown["properties"] = properties
    return shown
