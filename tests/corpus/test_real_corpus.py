"""End to end on one real set: npm pack from the registry, checksum, render, manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_fetch_and_build_streamline(tmp_path: Path) -> None:
    env = {"EASEL_HOME": str(tmp_path / "home")}
    proc = run_cli("corpus", "fetch", "--set", "streamline-emojis", env=env, check=True)
    assert "fetched" in proc.stdout
    proc = run_cli("corpus", "fetch", "--set", "streamline-emojis", env=env, check=True)
    assert "present" in proc.stdout
    proc = run_cli("corpus", "build", "--size", "64", env=env, check=True)
    assert "streamline-emojis       787" in proc.stdout
    assert "787 items" in proc.stdout and "0 skipped" in proc.stdout
