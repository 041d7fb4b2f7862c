"""Imported by a benchmark worker (`celery worker --include bench.small_images`): the simulator
renders its grids with 16-px cells instead of 512-px ones.

The simulator stands in for Midjourney, whose GPUs draw the pictures; in the worker process
that drawing costs ~0.15-0.3 CPU-s per job (Pillow), which would hide mjq's own cost per job.
Rows measured with this module say so; every other row uses the real renderer.
"""
from __future__ import annotations

from typing import Any

from workers.drivers import sim_images

#: Short side of one grid cell in pixels (the real renderer uses 512).
CELL_PX = 16

_render_grid = sim_images.render_grid


def _small_grid(prompt: str, seed: int, short_side: int = CELL_PX) -> Any:
    return _render_grid(prompt, seed, short_side=CELL_PX)


sim_images.render_grid = _small_grid
