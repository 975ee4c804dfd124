"""The whole studio in a real browser: sign up → upload a work → consent → generate → see the
credentials → gallery → verify → audit, with Playwright driving Debian's Chromium headless.

The server runs as a user would start it (``easel serve`` in a subprocess) on a tiny random
pipeline. Screenshots go to ``$EASEL_SCREENSHOTS`` if set (``docs/screenshots`` holds the
committed ones: ``EASEL_SCREENSHOTS=docs/screenshots pytest tests/server/test_browser.py``),
else to the test's temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import png_bytes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the browser test must run in CI: {reason}")
    pytest.skip(f"{reason} (scripts/test.sh installs it)")


@pytest.fixture
def live_server(easel_home: Path, tiny_model_dir: Path, tmp_path: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, EASEL_HOME=str(easel_home), EASEL_MODEL_DIR=str(tiny_model_dir),
               OMP_NUM_THREADS="1")
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "easel.cli.main", "serve", "--port", str(port),
                             "--threads", "1", "--log-level", "warning"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError("easel serve exited:\n" + (tmp_path / "server.log").read_text())
            try:
                if httpx.get(base + "/api/health", timeout=2).json().get("ok"):
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise AssertionError("easel serve did not start in 120 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_sign_up_upload_generate_verify_in_chromium(live_server: str, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    shots = Path(os.environ.get("EASEL_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    work_file = tmp_path / "my-fox.png"
    work_file.write_bytes(png_bytes(11))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(60_000)

        # 1. sign up as an artist
        page.goto(live_server + "/signup")
        page.fill("#username", "artie")
        page.fill("#display_name", "Artie Example")
        page.fill("#password", "correct horse battery")
        page.check("#role-artist")
        page.screenshot(path=str(shots / "01-signup.png"), full_page=True)
        page.click("#signup")
        expect(page).to_have_url(live_server + "/works")

        # 2. upload a work with consent choices; the ingest verdict is shown
        page.set_input_files("#file", str(work_file))
        page.fill("#title", "My fox")
        page.fill("#license_spdx", "LicenseRef-proprietary")
        page.check("#allow-train_style")
        page.click("#upload")
        expect(page.locator("#verdict")).to_contain_text("accepted: registered as wk_")
        row = page.locator("table tbody tr").first
        expect(row).to_contain_text("My fox")
        page.screenshot(path=str(shots / "02-works.png"), full_page=True)

        # 3. the consent dashboard: withdraw train_style; the history grows
        page.goto(live_server + "/consent")
        page.select_option("#action", "revoke")
        page.check("input[name=purposes][value=train_style]")
        page.click("#apply")
        expect(page.locator("#message")).to_contain_text("recorded revoke (train_style)")
        expect(page.locator("#history tbody tr")).to_have_count(4)  # register, grant, revoke ×2
        page.screenshot(path=str(shots / "03-consent.png"), full_page=True)

        # 4. generate: progress over server-sent events, then the images with their credentials
        page.goto(live_server + "/generate")
        page.fill("#prompt", "fox face")
        page.select_option("#style", "twemoji")
        page.fill("#n", "2")
        page.fill("#steps", "4")
        page.fill("#seed", "5")
        page.click("#go")
        expect(page.locator("#status")).to_contain_text("done: 2 image(s)")
        creds = page.locator(".credentials")
        expect(creds).to_have_count(2)
        expect(creds.first).to_contain_text("Content credentials: Trusted")
        page.screenshot(path=str(shots / "04-generate.png"), full_page=True)

        # 5. the gallery lists them
        page.goto(live_server + "/gallery")
        expect(page.locator("figure")).to_have_count(2)
        page.screenshot(path=str(shots / "05-gallery.png"), full_page=True)
        first_src = page.locator("figure img").first.get_attribute("src")
        assert first_src and first_src.startswith("/api/images/")
        image = page.request.get(live_server + first_src)
        assert image.ok
        generated = tmp_path / "generated.png"
        generated.write_bytes(image.body())

        # 6. verify the downloaded file: found by its content credentials
        page.goto(live_server + "/verify")
        page.set_input_files("#file", str(generated))
        page.click("#check")
        expect(page.locator("#result")).to_contain_text("Found by: credentials")
        expect(page.locator("#result")).to_contain_text(first_src.rsplit("/", 1)[1])
        expect(page.locator("#origin")).to_contain_text("matched by its weights")  # the server's model
        page.screenshot(path=str(shots / "06-verify.png"), full_page=True)

        # 7. audit (the page says plainly when the audit stage is not installed)
        page.goto(live_server + "/audit")
        expect(page.locator("h1")).to_contain_text("Audit")
        page.screenshot(path=str(shots / "07-audit.png"), full_page=True)

        # 8. an account page with an API key
        page.goto(live_server + "/account")
        page.click("#new-key-button")
        expect(page.locator("#new-key")).to_contain_text("esk_")
        browser.close()
