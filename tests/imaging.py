"""Image helpers shared by tests and the action walk: data URLs and pixel comparisons."""
from __future__ import annotations

import base64
import io

from PIL import Image, ImageChops, ImageStat

_MIME = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return f"data:image/{_MIME[fmt]};base64," + base64.b64encode(buf.getvalue()).decode()


def diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two same-size images (0 identical, 255 opposite)."""
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def centre_box(size: tuple[int, int], factor: float) -> tuple[int, int, int, int]:
    """The box an image shrunk by 1/factor occupies in the centre of a canvas of `size`."""
    w, h = size
    iw, ih = round(w / factor), round(h / factor)
    left, top = (w - iw) // 2, (h - ih) // 2
    return left, top, left + iw, top + ih


def cell(grid: Image.Image, index: int) -> Image.Image:
    """Cell 1..4 of a 2×2 grid."""
    w, h = grid.width // 2, grid.height // 2
    x, y = ((index - 1) % 2) * w, ((index - 1) // 2) * h
    return grid.crop((x, y, x + w, y + h))
