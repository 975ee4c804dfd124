"""Checking an uploaded image before anything is stored: format, size, bombs, truncation, SVG.

Everything that enters the registry passes ``load_image``. It reads the header before decoding
so a decompression bomb is refused without allocating it, decodes fully so a truncated file is
refused, and accepts SVG only when it has no script, event handler, external reference or
DOCTYPE. The result is an RGB picture on white, ready to fingerprint.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from PIL import Image

from easel.errors import BadInput
from easel.images import rgb_on_white

MAX_BYTES = 50 * 1024 * 1024
"""Largest upload accepted (50 MiB): far above any illustration, below memory trouble."""
MAX_PIXELS = 40_000_000
"""Largest decoded size (40 megapixels, e.g. 8000×5000): a 30000×30000 PNG bomb is 900 MP."""
MAX_SIDE = 20_000
"""Longest side accepted, in pixels."""
MAX_SVG_BYTES = 2 * 1024 * 1024
"""Largest SVG accepted (2 MiB; the biggest icon in the seven emoji sets is about 60 KiB)."""
SVG_RENDER_SIDE = 128
"""SVGs are rendered to this square size for fingerprinting (the size pictures are hashed at,
``fingerprint.FINGERPRINT_SIDE``; rendering at 256 px took 17 ms an icon here, 128 px a quarter)."""
RASTER_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}

_FORBIDDEN_SVG_ELEMENTS = {"script", "foreignobject", "iframe", "object", "embed", "handler"}
_URL_IN_STYLE = re.compile(r"url\(\s*['\"]?\s*(?!#)", re.IGNORECASE)


@dataclass
class LoadedImage:
    """A validated image: its bytes' sha256, type, size, and an RGB picture to fingerprint."""

    sha256: str
    media_type: str
    width: int
    height: int
    image: Image.Image  # RGB, alpha composited on white
    data: bytes


def _looks_like_svg(data: bytes) -> bool:
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(b"<?xml") or head.startswith(b"<svg") or head.startswith(b"<!--") \
        or (head.startswith(b"<") and b"<svg" in data[:4096].lower())


def check_svg(text: str) -> ET.Element:
    """Parse an SVG and refuse anything active or external; returns the root element."""
    lowered = text.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise BadInput("SVG has a DOCTYPE or entity declaration, which is not allowed",
                       hint="export the SVG without a DOCTYPE")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BadInput(f"SVG is not well-formed XML: {exc}") from exc
    if root.tag.rsplit("}", 1)[-1].lower() != "svg":
        raise BadInput(f"XML document is not an SVG (root element <{root.tag}>)")
    for element in root.iter():
        name = element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""
        if name.lower() in _FORBIDDEN_SVG_ELEMENTS:
            raise BadInput(f"SVG contains a <{name}> element; scripts and embedded documents "
                           "are not allowed", hint="remove it and upload again")
        for attr, value in element.attrib.items():
            local = attr.rsplit("}", 1)[-1].lower()
            if local.startswith("on"):
                raise BadInput(f"SVG has an event handler attribute {local!r} on <{name}>; "
                               "scripts are not allowed")
            low = value.strip().lower()
            if "javascript:" in low:
                raise BadInput(f"SVG attribute {local!r} on <{name}> holds a javascript: URL")
            if local == "href" and not (low.startswith("#") or low.startswith("data:image/")):
                raise BadInput(f"SVG references an external resource ({value[:60]!r}); "
                               "only internal references are allowed")
            if local == "style" and _URL_IN_STYLE.search(value):
                raise BadInput(f"SVG style on <{name}> references an external resource")
        if name.lower() == "style" and element.text and (
                "@import" in element.text.lower() or _URL_IN_STYLE.search(element.text)):
            raise BadInput("SVG <style> imports or references an external resource")
    return root


def _load_svg(data: bytes) -> LoadedImage:
    if len(data) > MAX_SVG_BYTES:
        raise BadInput(f"SVG is {len(data) / 2**20:.1f} MiB; the limit is {MAX_SVG_BYTES // 2**20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput("SVG is not UTF-8 text") from exc
    check_svg(text)
    from easel.corpus.render import render_svg

    image = render_svg(text, SVG_RENDER_SIDE)
    return LoadedImage(hashlib.sha256(data).hexdigest(), "image/svg+xml", SVG_RENDER_SIDE,
                       SVG_RENDER_SIDE, image, data)


def load_image(data: bytes, name: str = "image") -> LoadedImage:
    """Validate ``data`` as a PNG, JPEG, WebP or SVG image and decode it.

    Raises ``BadInput`` saying what is wrong: empty, too large, not an image, a decompression
    bomb, truncated or corrupt, or an SVG with scripts or external references.
    """
    if not data:
        raise BadInput(f"{name} is empty")
    if len(data) > MAX_BYTES:
        raise BadInput(f"{name} is {len(data) / 2**20:.0f} MiB; the limit is {MAX_BYTES // 2**20} MiB")
    if _looks_like_svg(data):
        return _load_svg(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise BadInput(f"{name} is a decompression bomb ({exc})",
                       hint=f"images may have at most {MAX_PIXELS // 10**6} megapixels") from exc
    except (Image.DecompressionBombWarning, Image.UnidentifiedImageError) as exc:
        if isinstance(exc, Image.DecompressionBombWarning):
            raise BadInput(f"{name} is too large to decode safely ({exc})",
                           hint=f"images may have at most {MAX_PIXELS // 10**6} megapixels") from exc
        raise BadInput(f"{name} is not an image Easel can read",
                       hint="upload a PNG, JPEG, WebP or SVG file") from exc
    with opened:
        fmt = opened.format or "?"
        if fmt not in RASTER_FORMATS:
            raise BadInput(f"{name} is a {fmt} image; accepted formats are PNG, JPEG, WebP and SVG")
        width, height = opened.size
        if width < 1 or height < 1:
            raise BadInput(f"{name} has no pixels ({width}×{height})")
        if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
            raise BadInput(f"{name} is {width}×{height} pixels ({width * height / 1e6:.0f} MP), "
                           f"over the limit of {MAX_PIXELS // 10**6} MP / {MAX_SIDE} px a side; "
                           "refused as a possible decompression bomb")
        try:
            opened.load()
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadInput(f"{name} is truncated or corrupt: {exc}",
                           hint="upload the complete file") from exc
        image = rgb_on_white(opened)
    return LoadedImage(hashlib.sha256(data).hexdigest(), RASTER_FORMATS[fmt], width, height,
                       image, data)
