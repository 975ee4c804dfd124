"""Opening the registry database and bringing its schema up to date with Alembic.

``upgrade(url)`` is the one way the schema is made: the SQLite file under ``EASEL_HOME`` by
default, or a PostgreSQL URL (``postgresql+psycopg://…``) through the same code. Other stages
add their own revisions after ``0001_registry`` and call the same function.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from easel.db import get_engine, session_scope
from easel.errors import EaselError

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
_upgraded: set[str] = set()
_lock = threading.Lock()


def _alembic_config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration revision shipped in the package.

    Read from the revision files' ``revision``/``down_revision`` lines, which avoids importing
    Alembic on every command (a third of a second); Alembic decides when that is ambiguous.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text_ = path.read_text()
        if (rev := _REVISION.search(text_)) is not None:
            revisions.add(rev.group(1))
        if (down := _DOWN.search(text_)) is not None:
            parents.add(down.group(1))
    heads = revisions - parents
    if len(heads) == 1:
        return heads.pop()
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None`` for an empty database)."""
    _ensure_sqlite_dir(url)
    engine = get_engine(url)
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema at ``url`` to ``revision`` (default: the newest).

    Raises ``EaselError`` naming the URL when the database cannot be reached.
    """
    from alembic import command

    _ensure_sqlite_dir(url)
    config = _alembic_config()
    try:
        with get_engine(url).begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    except OperationalError as exc:
        raise EaselError(f"cannot open the database {make_url(url).render_as_string()}: "
                         f"{exc.orig}", hint="check EASEL_DATABASE_URL and that the server runs") from exc
    if revision == "head":
        with _lock:
            _upgraded.add(url)


def ensure_schema(url: str) -> None:
    """Upgrade ``url`` to the newest schema once per process (cheap after the first call)."""
    if url in _upgraded:
        return
    try:
        current = current_revision(url)
    except OperationalError:
        current = None
    if current != head_revision():
        upgrade(url)
    with _lock:
        _upgraded.add(url)


def registry_url() -> str:
    """The database URL in force (``EASEL_DATABASE_URL`` or the SQLite file under EASEL_HOME)."""
    from easel.config import get_settings

    return get_settings().db_url


@contextmanager
def registry_session(url: str | None = None) -> Iterator[Session]:
    """A session on the registry with the schema up to date; commits on success."""
    url = url or registry_url()
    ensure_schema(url)
    with session_scope(url) as session:
        yield session


def index_dir(url: str) -> Path:
    """Where the similarity indexes of the database at ``url`` live.

    Beside the SQLite file (``<name>.index/``); for a server database, under EASEL_HOME in a
    folder named after the database, so two databases never share an index.
    """
    import hashlib

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        db = Path(str(parsed.database))
        return db.parent / f"{db.name}.index"
    from easel.config import get_settings

    tag = hashlib.sha256(parsed.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return get_settings().home / "index" / f"{parsed.get_backend_name()}-{parsed.database}-{tag}"
