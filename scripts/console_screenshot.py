"""Regenerate docs/console.png: serve digits and SqueezeNet under light load, open the console, try a digit.

The picture tried is one of our own generated digit samples (the shared photos stay test data).

.venv/bin/python scripts/console_screenshot.py   (needs ../shared, playwright and Debian's chromium)
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dms.server import default_model_archive  # noqa: E402
from tests.conftest import make_squeezenet_archive  # noqa: E402
from tests.e2e.test_user_flow import SQUEEZENET_CONFIG  # noqa: E402
from tests.support import SHARED, DmsServer  # noqa: E402


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = SHARED / "models" / "squeezenet" / "squeezenet_v1.1.onnx"
        make_squeezenet_archive(model, work / "store", SQUEEZENET_CONFIG)
        server = DmsServer(
            work,
            [
                "--model-store",
                str(work / "store"),
                "--models",
                f"digits={default_model_archive()}",
                "squeezenet=squeezenet.mar",
            ],
        ).start()
        stop = threading.Event()
        samples = [p.read_bytes() for p in sorted((default_model_archive().parent / "samples").glob("*.png"))]
        kitten = (SHARED / "images" / "kitten.jpg").read_bytes()

        def load() -> None:
            with httpx.Client() as client:
                while not stop.is_set():
                    for sample in samples:
                        client.post(f"{server.inference_url}/predictions/digits", content=sample)
                    client.post(f"{server.inference_url}/predictions/squeezenet", content=kitten)
                    time.sleep(0.02)

        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
                )
                page = browser.new_page(viewport={"width": 1200, "height": 820})
                page.goto(f"{server.management_url}/console")
                page.get_by_test_id("token-input").fill(server.key())
                page.get_by_test_id("token-save").click()
                page.get_by_test_id("try-digits").click()
                page.get_by_test_id("file-input").set_input_files(
                    str(default_model_archive().parent / "samples" / "digit_3.png")
                )
                page.get_by_test_id("send").click()
                page.get_by_test_id("bar-label").first.wait_for()
                time.sleep(16)  # a few polls, so the sparklines have a history
                page.screenshot(path=str(ROOT / "docs" / "console.png"), full_page=True)
                browser.close()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            server.stop()


if __name__ == "__main__":
    main()
