"""The web console in headless Chromium: log in, see the default model, classify the kitten, scale a model.

Screenshots of each step go to test-output/console/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dms.server import default_model_archive
from tests.conftest import make_squeezenet_archive
from tests.e2e.test_user_flow import SQUEEZENET_CONFIG
from tests.support import REPO, DmsServer, running_server, shared_path, wait_for

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "test-output" / "console"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmsServer]:
    model = shared_path("models/squeezenet/squeezenet_v1.1.onnx")
    work = tmp_path_factory.mktemp("console")
    make_squeezenet_archive(model, work / "store", SQUEEZENET_CONFIG.replace("batch_size: 4", "batch_size: 1"))
    models = [f"digits={default_model_archive()}", "squeezenet=squeezenet.mar"]
    args = ["--model-store", str(work / "store"), "--models", *models, "--default-workers-per-model", "1"]
    with running_server(work, args) as running:
        yield running


@pytest.fixture(scope="module")
def page(server: DmsServer) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (scripts/test.sh installs Debian's chromium), which is missing")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 820})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_log_in_and_see_the_default_model(server: DmsServer, page):
    page.goto(f"{server.management_url}/console")
    page.get_by_test_id("token-input").fill("not-the-key")
    page.get_by_test_id("token-save").click()
    sync_api.expect(page.locator("#login-error")).to_contain_text("refused")
    page.get_by_test_id("token-input").fill(server.key())
    page.get_by_test_id("token-save").click()
    row = page.get_by_test_id("model-row-digits")
    sync_api.expect(row).to_contain_text("READY")
    sync_api.expect(row).to_contain_text("default")
    page.screenshot(path=str(SHOTS / "1-models.png"), full_page=True)


def test_upload_the_kitten_and_read_egyptian_cat_on_top(server: DmsServer, page):
    page.get_by_test_id("try-squeezenet").click()
    page.get_by_test_id("file-input").set_input_files(str(shared_path("images/kitten.jpg")))
    page.get_by_test_id("send").click()
    top = page.get_by_test_id("bar-label").first
    sync_api.expect(top).to_have_text("Egyptian cat")
    labels = page.get_by_test_id("bar-label").all_inner_texts()
    assert labels[:3] == ["Egyptian cat", "tiger cat", "tabby"]
    sync_api.expect(page.locator("#preview")).to_be_visible()
    page.screenshot(path=str(SHOTS / "2-kitten.png"), full_page=True)


def test_scale_a_model_from_the_console(server: DmsServer, page):
    workers = page.get_by_test_id("workers-digits")
    sync_api.expect(workers).to_have_text("1/1")
    page.get_by_test_id("scale-up-digits").click()
    sync_api.expect(workers).to_have_text("2/2")
    wait_for(lambda: len(server.worker_pids("digits")) == 2, what="a second digits worker process")
    page.screenshot(path=str(SHOTS / "3-scaled.png"), full_page=True)


def test_the_console_page_is_public_but_its_api_is_not(server: DmsServer):
    import httpx

    assert httpx.get(f"{server.management_url}/console").status_code == 200
    assert httpx.get(f"{server.management_url}/console/static/console.js").status_code == 200
    assert httpx.get(f"{server.management_url}/console/api/summary").status_code == 401
    assert httpx.post(f"{server.management_url}/console/api/predict/digits", content=b"x").status_code == 401


def test_the_console_page_may_not_be_framed_by_another_site(server: DmsServer):
    import httpx

    page = httpx.get(f"{server.management_url}/console")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
