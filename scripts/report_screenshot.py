"""Render a results folder's report.html to a PNG in headless Chromium (for the README).

    .venv/bin/python scripts/report_screenshot.py results/quickstart docs/report.png

The page is opened as a file:// URL with every other request aborted (the report makes
none; `blocked` counts any that it tries). It uses Debian's /usr/bin/chromium through
Playwright's Python package (`pip install playwright`, never `playwright install`).
tests/test_report_browser.py drives the page with the same setup (`open_report`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Opened:
    """The loaded page and what happened while it ran."""

    page: Any
    url: str
    blocked: list[str] = field(default_factory=list)  # requests aborted (not the file)
    failed: list[str] = field(default_factory=list)  # requests that failed
    console_errors: list[str] = field(default_factory=list)  # console errors, page errors


@contextlib.contextmanager
def open_report(html: Path, width: int = 1280, height: int = 900) -> Iterator[Opened]:
    """`html` loaded in a fresh headless Chromium (fresh profile), the network cut off."""
    from playwright.sync_api import sync_playwright

    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile, \
            sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": width, "height": height})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            opened = Opened(page, url)

            def route(r: Any) -> None:
                if r.request.url == url:
                    r.continue_()
                else:
                    opened.blocked.append(r.request.url)
                    r.abort()

            browser.route("**/*", route)
            page.on("console", lambda m: m.type == "error" and opened.console_errors.append(
                m.text))
            page.on("pageerror", lambda e: opened.console_errors.append(str(e)))
            page.on("requestfailed", lambda r: opened.failed.append(r.url))
            page.goto(url, wait_until="load")
            yield opened
        finally:
            browser.close()


def screenshot(html: Path, out: Path, width: int = 1280, max_height: int = 1600) -> Opened:
    """Save the top `max_height` px of the page at `width` px to `out` (PNG)."""
    with open_report(html, width=width) as opened:
        full = opened.page.evaluate("document.documentElement.scrollHeight")
        out.parent.mkdir(parents=True, exist_ok=True)
        opened.page.screenshot(path=str(out), full_page=True, clip={
            "x": 0, "y": 0, "width": width, "height": min(full, max_height)})
        return opened


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path, help="a results folder holding report.html")
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--max-height", type=int, default=1600)
    a = ap.parse_args(argv)
    html = a.results / "report.html" if a.results.is_dir() else a.results
    if not html.is_file():
        print(f"error: no report.html in {a.results}", file=sys.stderr)
        return 2
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is missing (apt-get install -y chromium)", file=sys.stderr)
        return 2
    opened = screenshot(html, a.out, a.width, a.max_height)
    problems = opened.blocked + opened.failed + opened.console_errors
    print(f"wrote {a.out}" + (f"; problems: {problems}" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
