"""The ``glyphs`` benchmark's images: letters rendered in the fonts that ship with matplotlib.

A second offline benchmark that differs from ``digits`` in resolution (24 px by default;
digits: 16) and in style (typeset letters in 21 faces — sans, serif, mono, Computer Modern,
STIX; upright, bold, italic — with random size, rotation and position, instead of 8×8
handwriting). Nothing is downloaded: the fonts are matplotlib's bundled TrueType files.
Every sample is drawn from a generator seeded by (split seed, set, index), so the sets are
fixed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from oodkit.errors import OodkitError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# faces with the Latin capitals at their usual code points (no symbol-only files)
GLYPH_FONTS = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic",
    "STIXGeneral",
    "STIXGeneralBol",
    "STIXGeneralItalic",
    "STIXGeneralBolIta",
    "cmr10",
    "cmb10",
    "cmss10",
    "cmti10",
    "cmtt10",
)
CANVAS = 64  # rendered at this side, then resized to the benchmark's image size
FONT_PX = (40, 58)  # font size range on the canvas
MAX_ROTATION = 15.0  # degrees either way
MAX_SHIFT = 5  # canvas pixels either way


@lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    """matplotlib's bundled font files of ``GLYPH_FONTS`` (refused when one is missing, since
    the sets would silently change)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = tuple(folder / f"{name}.ttf" for name in GLYPH_FONTS)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise OodkitError(f"glyphs: matplotlib's font {missing[0]} is missing from {folder}")
    return paths


def render_glyph(letter: str, rng: np.random.Generator, size: int) -> Image.Image:
    """One letter, white on black: a random face, size, rotation and position."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = font_files()
    font = ImageFont.truetype(
        str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(*FONT_PX))
    )
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    dx, dy = (int(v) for v in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2))
    x = (CANVAS - (right - left)) / 2 - left + dx
    y = (CANVAS - (bottom - top)) / 2 - top + dy
    draw.text((x, y), letter, fill=255, font=font)
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    canvas = canvas.rotate(angle, resample=Image.BILINEAR)
    return canvas.resize((size, size), Image.LANCZOS)


def glyph_images(
    letters: str, per_letter: int, size: int, seed: tuple[int, ...]
) -> tuple[list, list[int]]:
    """``per_letter`` renderings of each letter (images, letter index), from ``seed``."""
    from oodkit.seeding import numpy_rng

    rng = numpy_rng(*seed)
    images, labels = [], []
    for index, letter in enumerate(letters):
        for _ in range(per_letter):
            images.append(render_glyph(letter, rng, size))
            labels.append(index)
    return images, labels
