"""A real headless browser for the web console's tests: Debian's Chromium (``make test``
installs it) driven by Playwright, and what the tests read off its screenshots."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
#: As the machine's own check starts it: no sandbox (tests may run as root), and nothing that
#: reaches out to the network on its own.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}


@contextlib.contextmanager
def chromium_page() -> Iterator[Page]:
    """A page of a new headless Chromium with an empty profile; the browser goes at the end.
    Dialogs (a delete's confirmation) are accepted, and the page's script errors fail the
    test that made them."""
    assert Path(CHROMIUM).is_file(), f"needs Debian's chromium at {CHROMIUM} (make test has it)"
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            page.set_default_timeout(30_000)
            page.on("dialog", lambda dialog: dialog.accept())
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
        finally:
            browser.close()
    assert not errors, f"the console's script failed: {errors}"


def artifacts() -> Path:
    """Where screenshots are kept for people to look at (``COVE_TEST_ARTIFACTS``, else a
    temporary directory)."""
    configured = os.environ.get("COVE_TEST_ARTIFACTS")
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / "cove-console-shots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def share_of(png: bytes, colour: tuple[int, int, int], tolerance: int = 24) -> float:
    """The share of a screenshot's pixels within ``tolerance`` of ``colour`` on each channel."""
    data = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
    pixels = [data[n : n + 3] for n in range(0, len(data), 3)]
    near = sum(
        1 for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p, colour, strict=True))
    )
    return near / len(pixels)


def size_of(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size
