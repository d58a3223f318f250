"""Screenshot of the playground with a finished result, for the README.

Starts `magvit serve` on a checkpoint (default: the shipped one), opens the page in headless
Chromium, runs frame prediction on a bundled sample clip and saves the page as a PNG.

    .venv/bin/python docs/screenshot.py [--checkpoint DIR] [--out docs/images/playground.png]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--task", default="fp")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "playground.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium on this machine")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "serve",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--data-dir",
        tempfile.mkdtemp(prefix="magvit-shot-"),
    ]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit("the server did not become ready")
            time.sleep(0.2)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            page.goto(url + "/")
            page.click(f"label[data-code={args.task}]")
            page.wait_for_function("document.querySelector('#sample').options.length > 1")
            page.select_option("#sample", index=1)
            page.wait_for_function("document.querySelector('#input-video').readyState >= 2")
            page.click("#run")
            page.wait_for_function(
                "document.querySelector('#result-video').duration > 0", timeout=120_000
            )
            page.wait_for_timeout(1500)  # let the looping videos show a frame
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
