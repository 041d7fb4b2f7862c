"""Image URL modes: which form of an image URL a client is shown, chosen by the path it calls.

What is stored never changes (the store's own URL, "relay"); the form is applied when a task is
serialized for a response:
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

from app.images import ImageStore

RELAY, ORIGIN, PROXY = "relay", "origin", "proxy"
IMAGE_MODES = (RELAY, ORIGIN, PROXY)


def present(task: dict[str, Any], mode: str, images: ImageStore, proxy_url: str = "") -> dict[str, Any]:
    """`task` (a Task.to_json() dict) with its image URLs in `mode`'s form; `task` itself is not changed."""
    if mode == ORIGIN:
        origin = (task.get("properties") or {}).get("originImageUrl")
        if isinstance(origin, str) and origin and task.get("imageUrl"):
            return {**task, "imageUrl": origin}
        return task
    if mode != PROXY or not proxy_url:
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
