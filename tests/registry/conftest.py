"""Pictures the registry tests draw themselves, and a snapshot of what is stored."""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import func, select

from easel.registry.models import ConsentEvent, LedgerHead, Work
from easel.registry.store import registry_session


def artwork(seed: int, size: int = 256) -> Image.Image:
    """A busy, asymmetric drawing (PDQ quality 100) unique to ``seed``."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x, y = rng.randint(0, size - 40), rng.randint(0, size - 40)
        w, h = rng.randint(size // 12, size // 3), rng.randint(size // 12, size // 3)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x, y, x + w, y + h], fill=colour)
        else:
            draw.rectangle([x, y, x + w, y + h], fill=colour)
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims ``width``×``height`` RGB pixels, with a tiny IDAT."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class Snapshot:
    works: int
    events: int
    head: str


def snapshot(url: str) -> Snapshot:
    """Counts of works and events and the ledger head: equal snapshots mean nothing changed."""
    with registry_session(url) as session:
        works = session.execute(select(func.count(Work.pk))).scalar_one()
        events = session.execute(select(func.count(ConsentEvent.seq))).scalar_one()
        head = session.execute(select(LedgerHead.hash)).scalar_one()
    return Snapshot(works, events, head)


@pytest.fixture
def two_artists(db_url: str) -> dict[str, str]:
    """Artists 'alice' and 'bob' in a fresh registry; returns their API keys."""
    from easel.registry.service import add_artist

    with registry_session(db_url) as session:
        _, alice = add_artist(session, "alice", "Alice", "alice@example.org")
        _, bob = add_artist(session, "bob", "Bob")
    return {"alice": alice, "bob": bob}
