"""Shared fixtures: an isolated EASEL_HOME per test and a tiny icon set the tests write."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from easel.config import get_settings
from easel.corpus.sources import IconSet, sha256_file

ROOT = Path(__file__).resolve().parents[1]

# Four small icons in Iconify's JSON shape, two with skin-tone variants, one non-square.
FIXTURE_ICONS = {
    "fox-face": '<circle cx="8" cy="8" r="7" fill="#f4900c"/><circle cx="5" cy="6" r="1" fill="#000"/>',
    "waving-hand": '<rect x="3" y="2" width="10" height="12" rx="3" fill="#ffdc5d"/>',
    "waving-hand-dark-skin-tone": '<rect x="3" y="2" width="10" height="12" rx="3" fill="#7c533e"/>',
    "red-heart": '<path d="M8 14L2 8a3 3 0 0 1 6-4a3 3 0 0 1 6 4z" fill="#dd2e44"/>',
    "blue-square": '<rect x="2" y="2" width="12" height="12" fill="#55acee"/>',
    "green-circle": '<circle cx="8" cy="8" r="6" fill="#78b159"/>',
}


def write_icon_package(root: Path, prefix: str, icons: dict[str, str],
                       extra: dict | None = None) -> Path:
    """Write an npm package directory holding an Iconify-style ``icons.json``."""
    pkg = root / prefix
    pkg.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict] = {name: {"body": body} for name, body in icons.items()}
    if extra:
        entries.update(extra)
    (pkg / "icons.json").write_text(json.dumps(
        {"prefix": prefix, "icons": entries, "width": 16, "height": 16}))
    (pkg / "info.json").write_text(json.dumps({
        "prefix": prefix, "name": f"Test {prefix}", "total": len(entries),
        "author": {"name": "Test Artist", "url": "https://example.org"},
        "license": {"title": "CC BY 4.0", "spdx": "CC-BY-4.0",
                    "url": "https://creativecommons.org/licenses/by/4.0/"},
    }))
    (pkg / "package.json").write_text(json.dumps({
        "name": f"@easel-test/{prefix}", "version": "1.0.0",
        "files": ["icons.json", "info.json"],
    }))
    return pkg


def pack_fixture_set(pkg: Path, set_id: str, tmp: Path) -> IconSet:
    """Pack the directory once with real npm to learn its sha256, as a pinned set would."""
    out = tmp / f"pack-{set_id}"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "pack", str(pkg), "--silent", "--pack-destination", str(out)],
                   check=True, capture_output=True)
    tarball = next(out.glob("*.tgz"))
    return IconSet(set_id=set_id, package=f"@easel-test/{set_id}", version="1.0.0",
                   sha256=sha256_file(tarball), title=f"Test {set_id}",
                   rights_holder="Test Artist", style_tag=f"{set_id} style",
                   location=str(pkg))


@pytest.fixture
def easel_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "easel-home"
    monkeypatch.setenv("EASEL_HOME", str(home))
    monkeypatch.delenv("EASEL_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def fixture_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, IconSet]:
    """Two tiny sets ('alpha', 'beta') packed with npm, keyed by set id."""
    root = tmp_path_factory.mktemp("icon-packages")
    sets = {}
    for set_id in ("alpha", "beta"):
        pkg = write_icon_package(root, set_id, FIXTURE_ICONS)
        sets[set_id] = pack_fixture_set(pkg, set_id, root)
    return sets


def run_cli(*args: str, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``easel`` as a user would, in a subprocess."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "easel.cli.main", *args],
                          capture_output=True, text=True, env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"easel {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


# PostgreSQL: a real server on loopback, one per test session, a fresh database per test. ---
def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def _pg_unavailable(reason: str) -> None:
    # In CI the PostgreSQL half of the suite must run: a missing server is a failure there.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason} (scripts/test.sh installs it)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL in a temporary directory on 127.0.0.1; yields its base URL.

    initdb and postgres refuse to run as root, so as root they run as the ``postgres`` user.
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _pg_unavailable("initdb/pg_ctl not found")
    assert initdb and pg_ctl
    root = Path(tempfile.mkdtemp(prefix="easel-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            _pg_unavailable("running as root and there is no 'postgres' user")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = root / "data"
    init = subprocess.run([*prefix, initdb, "-D", str(data), "-U", "easel", "--auth=trust",
                           "-E", "UTF8", "--no-locale", "--no-sync"],
                          capture_output=True, text=True)
    if init.returncode != 0:
        _pg_unavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    start = subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l",
                            str(root / "server.log"), "-w", "-t", "60", "start"],
                           capture_output=True, text=True)
    if start.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        _pg_unavailable(f"server did not start: {start.stderr.strip()[-200:]} {log[-300:]}")
    try:
        yield f"postgresql+psycopg://easel@127.0.0.1:{port}"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, easel_home: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, then a PostgreSQL database.

    ``EASEL_DATABASE_URL`` is set to it, so the CLI and ``get_settings()`` use it too.
    """
    from easel.db import get_engine

    if request.param == "sqlite":
        url = f"sqlite:///{easel_home / 'easel.db'}"
        monkeypatch.setenv("EASEL_DATABASE_URL", url)
        get_settings.cache_clear()
        yield url
        get_engine(url).dispose()
        return
    import psycopg

    base = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    monkeypatch.setenv("EASEL_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_engine(url).dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny test models gain nothing from threads, and oversubscribed OpenMP threads spin:
    one thread keeps the suite fast on a busy 2-core machine."""
    import torch

    torch.set_num_threads(1)
