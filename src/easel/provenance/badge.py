"""The optional visible mark: a small "AI generated" badge in the bottom-right corner."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

BADGE_TEXT = "AI generated"


def add_badge(image: Image.Image, text: str = BADGE_TEXT) -> Image.Image:
    """Return a copy of ``image`` with a dark, rounded, semi-opaque label and white ``text``.

    The label's height is about 7 % of the shorter side (at least 9 px of text), inset by
    the same margin from the bottom-right corner.
    """
    base = image.convert("RGBA")
    w, h = base.size
    font_px = max(9, round(min(w, h) * 0.045))
    font = ImageFont.load_default(size=font_px)
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, font_px // 3)
    margin = max(2, font_px // 2)
    box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
    x0, y0 = w - margin - box_w, h - margin - box_h
    draw.rounded_rectangle((x0, y0, x0 + box_w, y0 + box_h), radius=pad, fill=(20, 20, 20, 190))
    draw.text((x0 + pad - left, y0 + pad - top), text, font=font, fill=(255, 255, 255, 255))
    marked = Image.alpha_composite(base, overlay)
    return marked if image.mode == "RGBA" else marked.convert("RGB")
