"""Take the README's screenshots of the app on the demo store: docs/app.png (1280 px wide) and docs/app-phone.png (390 px).

Usage: python scripts/screenshots.py [--out docs] [--chromium /usr/bin/chromium]
Serves the demo store on a free local port, opens a shared search URL (`?q=…`) in headless Chromium (Playwright),
waits for the results and their images, and saves full-page screenshots. Chinese and Japanese text needs a CJK font
(Debian: `apt-get install fonts-wqy-microhei`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from clip_search.ui import load_app  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
# (file, viewport width, viewport height, the search the page opens with)
SHOTS = (
    ("app.png", 1280, 900, "?q=ein+gro%C3%9Fer+blauer+Kreis&labels=circle,+star,+heart&k=12"),
    ("app-phone.png", 390, 844, "?q=a+red+star&labels=red,+white&k=6"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="folder for the PNG files (default %(default)s)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium binary (default %(default)s)")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine, demo = load_app(None)
    for _, _, _, search in SHOTS:  # a first labelled search loads what labels need once: shoot steady-state timings
        params = parse_qs(search.lstrip("?"))
        engine.search(params["q"][0], labels=[label.strip() for label in params["labels"][0].split(",")])
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                for name, width, height, search in SHOTS:
                    page = browser.new_page(viewport={"width": width, "height": height})
                    page.goto(url + search)
                    expect(page.locator("#status")).to_contain_text("results for", timeout=180_000)
                    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
                    page.screenshot(path=str(out / name), full_page=True)
                    print(f"wrote {out / name}")
                    page.close()
            finally:
                browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
