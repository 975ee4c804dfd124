"""Images for the provenance tests, drawn by the tests themselves (flat illustration art)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from easel.corpus.render import render_svg

FACE = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">'
        '<circle cx="18" cy="18" r="16" fill="#ffcc4d"/>'
        '<ellipse cx="12" cy="14" rx="2.5" ry="3.5" fill="#664500"/>'
        '<ellipse cx="24" cy="14" rx="2.5" ry="3.5" fill="#664500"/>'
        '<path d="M9 21q9 9 18 0" stroke="#664500" stroke-width="2" fill="none"/>'
        '<path d="M27 33l-5-5a3 3 0 0 1 5-3a3 3 0 0 1 5 3z" fill="#dd2e44"/></svg>')
HOUSE = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">'
         '<path d="M4 18L18 5l14 13z" fill="#c1694f"/><rect x="8" y="18" width="20" height="15" '
         'fill="#ffe8b6"/><rect x="15" y="24" width="6" height="9" fill="#662113"/>'
         '<rect x="10" y="20" width="4" height="4" fill="#55acee"/></svg>')


@pytest.fixture(scope="session")
def face() -> Image.Image:
    """A 256 px flat-colour smiley with a heart, RGB on white."""
    return render_svg(FACE, 256)


@pytest.fixture(scope="session")
def house() -> Image.Image:
    """A different 256 px flat drawing that is never published."""
    return render_svg(HOUSE, 256)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG file."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def build_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, payload in chunks:
        out.append(struct.pack(">I", len(payload)) + kind + payload
                   + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    return b"".join(out)


def change_one_pixel(signed: bytes) -> bytes:
    """The signed PNG with one pixel changed and every other chunk (the manifest) kept."""
    image = Image.open(io.BytesIO(signed)).convert("RGB")
    r, g, b = image.getpixel((128, 128))  # type: ignore[misc]
    image.putpixel((128, 128), ((r + 40) % 256, g, b))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    new_idat = b"".join(p for k, p in png_chunks(buf.getvalue()) if k == b"IDAT")
    out: list[tuple[bytes, bytes]] = []
    for kind, payload in png_chunks(signed):
        if kind == b"IDAT":
            if not any(k == b"IDAT" for k, _ in out):
                out.append((b"IDAT", new_idat))
            continue
        out.append((kind, payload))
    return build_png(out)
