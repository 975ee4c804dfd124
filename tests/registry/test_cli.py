"""The registry verbs as a user runs them: artist, work add/show/list, check, history, errors."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.conftest import run_cli
from tests.registry.conftest import artwork, png_bomb


def test_registry_cli(db_url: str, easel_home: Path, tmp_path: Path) -> None:
    out = run_cli("registry", "artist", "add", "alice", "--name", "Alice", check=True).stdout
    assert "api key ek_" in out and (easel_home / "keys" / "artists" / "alice.key").exists()
    run_cli("registry", "artist", "add", "bob", "--name", "Bob", check=True)
    original = tmp_path / "sunrise.png"
    artwork(21).save(original)
    added = run_cli("registry", "work", "add", str(original), "--as", "alice", "--license",
                    "CC-BY-4.0", "--attribution", "Sunrise by Alice", check=True).stdout
    work_id = added.split()[1]
    assert work_id.startswith("wk_") and "PDQ quality 100" in added

    flipped = tmp_path / "copy.jpg"
    Image.open(original).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped, quality=50)
    check = run_cli("registry", "check", str(flipped), "--as", "bob")
    assert check.returncode == 3 and f"matches {work_id}" in check.stdout
    assert "another owner's work" in check.stderr
    refused = run_cli("registry", "work", "add", str(flipped), "--as", "bob", "--license", "MIT")
    assert refused.returncode == 3 and work_id in refused.stderr and "distance" in refused.stderr
    wrong_key = run_cli("registry", "work", "add", str(flipped), "--as", "alice", "--license",
                        "MIT", "--key", "ek_not-the-key")
    assert wrong_key.returncode == 3 and "API key" in wrong_key.stderr

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    bad = run_cli("registry", "work", "add", str(bomb), "--as", "bob", "--license", "MIT")
    assert bad.returncode == 2 and bad.stderr.startswith("error: bomb.png")
    missing = run_cli("registry", "work", "show", "wk_nope")
    assert missing.returncode == 2 and "no work 'wk_nope'" in missing.stderr

    show = run_cli("registry", "work", "show", work_id, check=True).stdout
    assert "train_base         allowed" in show and "CC-BY-4.0" in show
    run_cli("registry", "consent", "revoke", work_id, "-p", "train_base", "-p",
            "commercial_output", "--as", "alice", check=True)
    denied = run_cli("registry", "may-use", work_id, "-p", "train_base")
    assert denied.returncode == 3 and "revoked by alice" in denied.stderr
    history = run_cli("registry", "consent", "history", work_id, check=True).stdout.splitlines()
    assert [line.split()[2] for line in history] == ["register", "revoke"]
    listing = run_cli("registry", "artist", "list", check=True).stdout
    assert any(line.split()[:2] == ["alice", "1"] for line in listing.splitlines())
    assert work_id in run_cli("registry", "work", "list", "--artist", "alice", check=True).stdout
    assert run_cli("registry", "verify-log", check=True).stdout.startswith("ok: 2 events and 1 works")
