"""Pictures the registry tests draw themselves, and a snapshot of what is stored."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from easel.registry.models import ConsentEvent, LedgerHead, Work
from easel.registry.store import registry_session
from tests.pictures import artwork, encode

__all__ = ["artwork", "encode"]


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
