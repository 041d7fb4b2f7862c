"""Behaviour of the simulator's image generator, as a Midjourney user would notice it."""

from __future__ import annotations

import re

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageStat

from workers.drivers import sim_images as sim

SMALL = 96  # short side for tests that don't care about the real size: keeps the suite fast


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference, 0..255."""
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def edge_energy(image: Image.Image) -> float:
    return ImageStat.Stat(image.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0]


@pytest.fixture(scope="module")
def fox_grid() -> Image.Image:
    return sim.render_grid("a red fox in a snowy forest --ar 16:9", 42, short_side=SMALL)


@pytest.fixture(scope="module")
def cell() -> Image.Image:
    return sim.render_cell("a blue lighthouse on a cliff", 7, 2, (240, 160))


# --- prompt parsing ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", (1, 1)),
        ("a cat --ar 16:9", (16, 9)),
        ("a cat --AR 32:18 --v 6", (16, 9)),
        ("a cat --aspect 2:3", (2, 3)),
        ("a cat --ar 0:3", (1, 1)),
        ("a cat --ar 10:1", (1, 1)),
        ("a cat --ar 1:9", (1, 1)),
    ],
)
def test_aspect_is_read_from_the_prompt_and_sanitised(prompt: str, expected: tuple[int, int]) -> None:
    assert sim.parse_aspect(prompt) == expected


def test_cell_size_keeps_the_short_side_and_scales_the_long_side() -> None:
    assert sim.cell_size((16, 9)) == (910, 512)
    assert sim.cell_size((2, 3)) == (512, 768)
    assert sim.cell_size((1, 1), 256) == (256, 256)


def test_seed_comes_from_the_prompt_or_is_stable_hash() -> None:
    assert sim.seed_for("a cat --seed 1234") == 1234
    assert sim.seed_for("a cat") == sim.seed_for("a cat")
    assert sim.seed_for("a cat", "job-1") != sim.seed_for("a cat", "job-2")
    assert 0 <= sim.seed_for("a cat --seed 99999999999") <= 4294967295


# --- grids -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("prompt", "size"),
    [("a cat", (1024, 1024)), ("a cat --ar 16:9", (1820, 1024)), ("a cat --ar 2:3", (1024, 1536))],
)
def test_grid_honours_the_aspect_ratio(prompt: str, size: tuple[int, int]) -> None:
    grid = sim.render_grid(prompt, 1)
    assert grid.size == size
    assert grid.mode == "RGB"


def test_same_prompt_and_seed_give_identical_bytes(fox_grid: Image.Image) -> None:
    again = sim.render_grid("a red fox in a snowy forest --ar 16:9", 42, short_side=SMALL)
    assert sim.to_png(again) == sim.to_png(fox_grid)


def test_a_different_seed_gives_a_different_picture(fox_grid: Image.Image) -> None:
    other = sim.render_grid("a red fox in a snowy forest --ar 16:9", 43, short_side=SMALL)
    assert mean_diff(other, fox_grid) > 8


def test_the_four_cells_differ_from_each_other(fox_grid: Image.Image) -> None:
    cells = [sim.crop_cell(fox_grid, i) for i in range(1, 5)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert mean_diff(cells[i], cells[j]) > 8, (i + 1, j + 1)


def test_colour_words_bias_the_palette() -> None:
    red = ImageStat.Stat(sim.render_grid("a red crimson scarlet dragon", 5, short_side=SMALL)).mean
    blue = ImageStat.Stat(sim.render_grid("a blue azure navy dragon", 5, short_side=SMALL)).mean
    assert red[0] > red[2]
    assert blue[2] > blue[0]


def test_a_cell_can_be_rerendered_alone(fox_grid: Image.Image) -> None:
    cell3 = sim.render_cell("a red fox in a snowy forest --ar 16:9", 42, 3, sim.cell_size((16, 9), SMALL))
    assert cell3.tobytes() == sim.crop_cell(fox_grid, 3).tobytes()


def test_cell_index_outside_1_to_4_is_rejected(fox_grid: Image.Image) -> None:
    with pytest.raises(ValueError):
        sim.crop_cell(fox_grid, 5)


# --- preview / upscale / variations -------------------------------------------------------------

def test_preview_gets_sharper_as_progress_grows() -> None:
    grid = sim.render_grid("geometric shapes --ar 16:9", 3, short_side=256)
    early, late = sim.preview(grid, 15), sim.preview(grid, 93)
    assert max(early.size) == 512 and early.size == late.size
    assert edge_energy(late) > edge_energy(early) * 1.5


def test_upscale_doubles_the_cell_and_keeps_its_content(fox_grid: Image.Image) -> None:
    big = sim.upscale(fox_grid, 2)
    original = sim.crop_cell(fox_grid, 2)
    assert big.size == (original.width * 2, original.height * 2)
    assert mean_diff(big.resize(original.size, Image.Resampling.LANCZOS), original) < 3


def test_variations_are_a_grid_of_four_different_takes_on_the_parent(cell: Image.Image) -> None:
    grid = sim.variation_grid(cell, 11, 0.8, (120, 80))
    assert grid.size == (240, 160)
    parent = cell.resize((120, 80))
    cells = [sim.crop_cell(grid, i) for i in range(1, 5)]
    assert all(mean_diff(c, parent) < 60 for c in cells)  # still recognisably the parent
    assert mean_diff(cells[0], cells[1]) > 2


def test_strong_variations_stray_further_than_subtle_ones(cell: Image.Image) -> None:
    parent = cell.resize((120, 80))

    def drift(strength: float) -> float:
        grid = sim.variation_grid(cell, 11, strength, (120, 80))
        return sum(mean_diff(sim.crop_cell(grid, i), parent) for i in range(1, 5))

    assert drift(1.0) > drift(0.0)


# --- zoom / pan / vary region -------------------------------------------------------------------

@pytest.mark.parametrize("factor", [2.0, 1.5])
def test_zoom_out_keeps_the_canvas_and_centres_the_shrunk_image(cell: Image.Image, factor: float) -> None:
    out = sim.zoom_out(cell, factor, 4)
    assert out.size == cell.size
    iw, ih = round(cell.width / factor), round(cell.height / factor)
    ox, oy = (cell.width - iw) // 2, (cell.height - ih) // 2
    centre = out.crop((ox, oy, ox + iw, oy + ih))
    assert mean_diff(centre, cell.resize((iw, ih), Image.Resampling.LANCZOS)) < 1


def test_zoom_out_rejects_factors_outside_1_to_2(cell: Image.Image) -> None:
    with pytest.raises(ValueError):
        sim.zoom_out(cell, 2.5, 1)


def test_pan_left_widens_and_keeps_the_old_image_on_the_right(cell: Image.Image) -> None:
    out = sim.pan(cell, "left", 8)
    assert out.size == (cell.width * 3 // 2, cell.height)
    assert out.crop((out.width - cell.width, 0, out.width, cell.height)).tobytes() == cell.tobytes()


def test_pan_up_heightens_and_keeps_the_old_image_at_the_bottom(cell: Image.Image) -> None:
    out = sim.pan(cell, "up", 8)
    assert out.size == (cell.width, cell.height * 3 // 2)
    assert out.crop((0, out.height - cell.height, cell.width, out.height)).tobytes() == cell.tobytes()


def test_pan_right_and_down_keep_the_old_image_at_the_start(cell: Image.Image) -> None:
    right, down = sim.pan(cell, "right", 8), sim.pan(cell, "down", 8)
    assert right.crop((0, 0, cell.width, cell.height)).tobytes() == cell.tobytes()
    assert down.crop((0, 0, cell.width, cell.height)).tobytes() == cell.tobytes()
    assert right.width > cell.width and down.height > cell.height


def test_pan_strip_starts_close_to_the_old_edge(cell: Image.Image) -> None:
    out = sim.pan(cell, "left", 8)
    seam = out.width - cell.width
    new_edge = out.crop((seam - 2, 0, seam, cell.height))
    old_edge = out.crop((seam, 0, seam + 2, cell.height))
    assert mean_diff(new_edge, old_edge) < 20


def test_vary_region_only_touches_the_white_part_of_the_mask(cell: Image.Image) -> None:
    mask = Image.new("L", (120, 80), 0)  # deliberately a different size: it is resized to the image
    ImageDraw.Draw(mask).rectangle((30, 20, 89, 59), fill=255)
    out = sim.vary_region(cell, mask, 13)
    assert out.size == cell.size
    black = Image.new("L", cell.size, 255)
    ImageDraw.Draw(black).rectangle((56, 36, 183, 123), fill=0)  # everything outside the scaled box
    untouched = Image.composite(out, Image.new("RGB", cell.size), black)
    reference = Image.composite(cell, Image.new("RGB", cell.size), black)
    assert untouched.tobytes() == reference.tobytes()
    inside = (64, 44, 176, 116)
    assert mean_diff(out.crop(inside), cell.crop(inside)) > 8


# --- blend / describe / shorten / swap ----------------------------------------------------------

def test_blend_landscape_is_a_3_by_2_grid_of_different_cells() -> None:
    red = Image.new("RGB", (300, 200), (220, 30, 30))
    ImageDraw.Draw(red).ellipse((50, 50, 150, 150), fill=(250, 250, 250))
    blue = Image.new("RGB", (200, 300), (30, 40, 200))
    ImageDraw.Draw(blue).rectangle((20, 150, 180, 280), fill=(20, 200, 60))
    grid = sim.blend([red, blue], (3, 2), 5, short_side=SMALL)
    assert grid.size == (2 * 144, 2 * 96)
    assert grid.width * 2 == grid.height * 3
    cells = [sim.crop_cell(grid, i) for i in range(1, 5)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert mean_diff(cells[i], cells[j]) > 8, (i + 1, j + 1)


@pytest.mark.parametrize(
    ("size", "ar"),
    [((1820, 1024), "--ar 16:9"), ((640, 640), "--ar 1:1"), ((800, 400), "--ar 2:1")],
)
def test_describe_gives_four_distinct_prompts_with_the_images_aspect(size: tuple[int, int], ar: str) -> None:
    image = sim.render_cell("gold and teal waves", 2, 1, (size[0] // 8, size[1] // 8)).resize(size)
    prompts = sim.describe_prompts(image)
    assert len(prompts) == 4 and len(set(prompts)) == 4
    assert all(p.endswith(" " + ar) for p in prompts)


def test_describe_names_the_dominant_colour() -> None:
    prompts = sim.describe_prompts(Image.new("RGB", (200, 200), (210, 35, 40)))
    assert "red" in prompts[0]


def test_describe_text_numbers_the_prompts_with_keycaps() -> None:
    assert sim.describe_text(["a", "b", "c", "d"]) == "1️⃣ a\n\n2️⃣ b\n\n3️⃣ c\n\n4️⃣ d"


def test_shorten_lists_important_tokens_and_five_shorter_prompts() -> None:
    markdown, prompts = sim.shorten_text(
        "a highly detailed portrait of a red fox in a snowy forest at dawn https://x.y/z.png --ar 16:9"
    )
    assert "## Important tokens" in markdown and "## Shortened prompts" in markdown
    assert "**fox**" in markdown and "~~the~~" not in markdown and "~~of~~" in markdown
    assert "https" not in markdown
    assert [line[:3] for line in markdown.splitlines() if re.match(r"\d\ufe0f\u20e3", line)] == [
        f"{n}\ufe0f\u20e3" for n in range(1, 6)
    ]
    assert len(prompts) == 5
    assert all(p.endswith("--ar 16:9") for p in prompts)
    lengths = [len(p.split()) for p in prompts]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[-1]
    assert sim.shorten_text("a red fox --ar 16:9") == sim.shorten_text("a red fox --ar 16:9")


def test_swap_face_only_changes_the_face_area_of_the_target() -> None:
    source = Image.new("RGB", (200, 260), (240, 200, 170))
    target = Image.new("RGB", (300, 400), (20, 60, 140))
    out = sim.swap_face(source, target, 3)
    assert out.size == target.size
    for x, y in ((0, 0), (299, 0), (0, 399), (299, 399), (10, 390)):
        assert out.getpixel((x, y)) == target.getpixel((x, y))
    face = out.getpixel((150, 140))
    assert sum(abs(a - b) for a, b in zip(face, target.getpixel((150, 140)), strict=True)) > 60


# --- encoding ----------------------------------------------------------------------------------

def test_png_and_webp_round_trip_through_open_image(cell: Image.Image) -> None:
    png, webp = sim.to_png(cell), sim.to_webp(cell)
    assert png.startswith(b"\x89PNG") and webp[8:12] == b"WEBP"
    assert sim.open_image(png).tobytes() == cell.tobytes()
    assert sim.open_image(webp).size == cell.size


def test_open_image_flattens_transparency_to_rgb() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert sim.open_image(sim.to_png(rgba)).getpixel((0, 0)) == (255, 255, 255)


def test_open_image_rejects_garbage_bytes() -> None:
    with pytest.raises(ValueError):
        sim.open_image(b"definitely not an image")
    with pytest.raises(ValueError):
        sim.open_image(sim.to_png(Image.new("RGB", (8, 8)))[:40])


@pytest.mark.parametrize("colour", [(250, 250, 250), (128, 128, 128), (5, 5, 8)], ids=["snow", "grey", "night"])
def test_vary_region_visibly_regenerates_even_a_flat_pale_or_dark_area(colour: tuple[int, int, int]) -> None:
    """A hue shift alone leaves white, grey and black as they were: the new area must still look new."""
    flat = Image.new("RGB", (256, 160), colour)
    mask = Image.new("L", (256, 160), 0)
    ImageDraw.Draw(mask).rectangle((128, 0, 255, 159), fill=255)
    for seed in range(20):
        out = sim.vary_region(flat, mask, seed)
        assert mean_diff(out.crop((136, 0, 256, 160)), flat.crop((136, 0, 256, 160))) > 20, seed
        assert out.crop((0, 0, 120, 160)).tobytes() == flat.crop((0, 0, 120, 160)).tobytes()
