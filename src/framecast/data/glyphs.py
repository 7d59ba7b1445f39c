"""Digit glyphs framecast draws itself, so Moving MNIST-style data needs no download.

The ten digits are rendered from the DejaVu Sans font that ships with matplotlib, then varied by a
seeded random rotation, shear, scale, stroke weight and blur, and centred in a 28x28 box as MNIST digits
are (the digit fills about 20x20).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


@functools.lru_cache(maxsize=4)
def builtin_digits(count: int = 2000, size: int = 28, seed: int = 0) -> np.ndarray:
    """``count`` digit images ``(count, size, size)`` uint8, digit ``i % 10`` at index ``i``; deterministic."""
    from matplotlib import font_manager

    font_path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight="bold"))
    rng = np.random.default_rng(seed)
    big = 4 * size
    out = np.zeros((count, size, size), np.uint8)
    fonts = {s: ImageFont.truetype(font_path, s) for s in (64, 72, 80, 88)}
    for i in range(count):
        img = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(img)
        font = fonts[int(rng.choice(list(fonts)))]
        draw.text((big / 2, big / 2), str(i % 10), fill=255, font=font, anchor="mm",
                  stroke_width=int(rng.integers(0, 5)), stroke_fill=255)
        shear = rng.uniform(-0.3, 0.3)
        img = img.transform((big, big), Image.AFFINE, (1, shear, -shear * big / 2, 0, 1, 0), Image.BILINEAR)
        img = img.rotate(rng.uniform(-15, 15), Image.BILINEAR)
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
        arr = np.asarray(img)
        ys, xs = np.nonzero(arr > 30)
        crop = Image.fromarray(arr[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        scale = 20 / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.LANCZOS)
        box = Image.new("L", (size, size), 0)
        box.paste(crop, ((size - crop.width) // 2, (size - crop.height) // 2))
        out[i] = np.asarray(box)
    return out
