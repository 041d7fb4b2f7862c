"""What each simulated job produces: the image work of every Midjourney action, with Pillow.

`produce(job, images, seed, hash_)` reads the parent's stored image (and masks, inputs)
by key and returns the result image, the buttons Midjourney shows under it, and the extra
properties (describe and shorten texts). Geometry follows the action: upscale = 2× one
cell; zoom out = the old image shrunk in the centre of each cell; pan = the canvas extended
with the old image kept on the far side; vary region = only the masked area changes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from app.buttons import INPAINT, describe_buttons, grid_buttons, shorten_buttons, upscale_buttons
from app.images import ImageStore
from workers.drivers import sim_images as sim
from workers.drivers.base import Job, UpstreamError

#: Strength of the variation kinds (0 subtle .. 1 strong).
VARIATION_STRENGTH = {"variation": 0.5, "low_variation": 0.25, "high_variation": 0.85}
BLEND_ASPECT = {"PORTRAIT": (2, 3), "SQUARE": (1, 1), "LANDSCAPE": (3, 2)}


@dataclass
class Result:
    image: Image.Image | None
    buttons: list[dict[str, Any]]
    properties: dict[str, Any] = field(default_factory=dict)
    prompt_en: str | None = None
    image_url: str | None = None  # set when the result shows an existing image (describe)


def blend_prompt(job: Job, images: ImageStore) -> str:
    """What Midjourney's start message shows for a /blend (its prompt): the images' links and the aspect.
    Empty for any other job."""
    if job.inputs.get("kind") != "blend":
        return ""
    w, h = BLEND_ASPECT.get(str(job.inputs.get("dimensions") or "SQUARE"), (1, 1))
    return " ".join([*(f"<{images.url(key)}>" for key in job.inputs.get("images") or []), f"--ar {w}:{h}"])


def _load(images: ImageStore, key: str | None, what: str) -> Image.Image:
    data = images.get(key) if key else None
    if data is None:
        raise UpstreamError(f"{what} image {key or '(none)'} is not stored")
    return sim.open_image(data)


def _first(keys: list[str] | None) -> str | None:
    return keys[0] if keys else None


def _cell_of(image: Image.Image) -> tuple[int, int]:
    """The grid cell size for an image of this shape (short side 512, same aspect)."""
    w, h = image.size
    if w >= h:
        return round(512 * w / h), 512
    return 512, round(512 * h / w)


def _grid_of(cells: list[Image.Image]) -> Image.Image:
    w, h = cells[0].size
    grid = Image.new("RGB", (w * 2, h * 2))
    for i, cell in enumerate(cells):
        grid.paste(cell.resize((w, h)) if cell.size != (w, h) else cell, ((i % 2) * w, (i // 2) * h))
    return grid


def _four(seed: int, make: Callable[[int], Image.Image]) -> Image.Image:
    return _grid_of([make(seed * 4 + i) for i in range(4)])


def produce(job: Job, images: ImageStore, seed: int, hash_: str) -> Result:
    """The result of `job` (its `inputs['kind']`, default imagine). Raises UpstreamError on bad inputs."""
    inputs = job.inputs
    kind = inputs.get("kind", "imagine")
    grid = grid_buttons(hash_)
    if kind == "imagine":
        return Result(sim.render_grid(job.prompt, seed), grid)
    if kind == "upscale":
        parent = _load(images, inputs.get("parentImage"), "parent")
        return Result(sim.upscale(parent, int(inputs["index"])), upscale_buttons(hash_))
    if kind.startswith("upscale_"):
        parent = _load(images, inputs.get("parentImage"), "parent")
        factor = 4 if kind.endswith("4x") else 2
        big = parent.resize((parent.width * factor, parent.height * factor), Image.Resampling.LANCZOS)
        return Result(big, upscale_buttons(hash_, with_upscalers=False))
    if kind in VARIATION_STRENGTH:
        parent = _load(images, inputs.get("parentImage"), "parent")
        source = sim.crop_cell(parent, int(inputs["index"])) if inputs.get("index") else parent
        cell = _cell_of(source)
        return Result(sim.variation_grid(source, seed, VARIATION_STRENGTH[kind], cell), grid)
    if kind == "blend":
        sources = [_load(images, key, "blend input") for key in inputs.get("images", [])]
        if not 2 <= len(sources) <= 5:
            raise UpstreamError("blend needs 2 to 5 images")
        return Result(sim.blend(sources, BLEND_ASPECT[inputs.get("dimensions", "SQUARE")], seed), grid)
    if kind in ("zoom", "custom_zoom"):
        parent = _load(images, inputs.get("parentImage"), "parent")
        small = parent.resize(_cell_of(parent), Image.Resampling.LANCZOS)
        zoom = float(inputs["zoom"])
        return Result(_four(seed, lambda s: sim.zoom_out(small, zoom, s)), grid)
    if kind == "pan":
        parent = _load(images, inputs.get("parentImage"), "parent")
        small = parent.resize(_cell_of(parent), Image.Resampling.LANCZOS)
        return Result(_four(seed, lambda s: sim.pan(small, inputs["direction"], s)), grid)
    if kind == "inpaint":
        parent = _load(images, inputs.get("parentImage"), "parent")
        mask = _load(images, inputs.get("mask"), "mask")
        small = parent.resize(_cell_of(parent), Image.Resampling.LANCZOS)
        return Result(_four(seed, lambda s: sim.vary_region(small, mask, s)), grid)
    if kind == "describe":
        key = _first(inputs.get("images"))
        prompts = sim.describe_prompts(_load(images, key, "describe input"))
        assert key is not None
        text = sim.describe_text(prompts)
        return Result(None, describe_buttons(), {"finalPrompt": text, "prompts": prompts}, prompt_en=text,
                      image_url=images.url(key))
    if kind in ("shorten", "shorten_details"):
        markdown, shortened = sim.shorten_text(job.prompt)
        if kind == "shorten_details":
            markdown = markdown.split("## Shortened prompts", 1)[0].rstrip() + "\n\n" + _details(job.prompt)
        return Result(None, shorten_buttons(hash_), {"finalPrompt": markdown, "prompts": shortened})
    if kind == "swap_face":
        source = _load(images, _first(inputs.get("source")), "face source")
        target = _load(images, _first(inputs.get("target")), "face target")
        return Result(sim.swap_face(source, target, seed), [])
    raise UpstreamError(f"the simulator cannot run {kind!r} ({INPAINT if kind == 'inpaint' else job.action})")


def _details(prompt: str) -> str:
    """Show Details: every token of the prompt with its weight, as /shorten's extended view."""
    words = [w for w in prompt.split() if not w.startswith("--")]
    total = max(len(words), 1)
    lines = [f"{w} {round(1 - i / (2 * total), 2)}" for i, w in enumerate(words)]
    return "## Token weights\n" + "\n".join(lines)
