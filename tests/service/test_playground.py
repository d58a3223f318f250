"""The playground page in a real headless Chromium: run a task, see the result, see errors."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest

from tests.service.conftest import Server, make_settings
from tests.support import videos

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium: `make test` installs Debian's "
        "chromium package; this machine could not",
    ),
]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def test_run_a_task_and_see_errors(browser, server):
    page = browser.new_page(bypass_csp=True)  # the test polls with eval; the page needs none
    page.goto(server.url + "/")
    page.click("label[data-code=cg]")
    page.wait_for_selector("#class-row:not([hidden])")
    assert page.inner_text("#class-id option[value='3']") == "3: scene 3"  # classes by name
    page.click("label[data-code=opc]")
    clip = videos.clip("webm", frames=10)
    page.set_input_files(
        "#video-file", files=[{"name": "clip.webm", "mimeType": "video/webm", "buffer": clip}]
    )
    page.fill("input[name=steps]", "2")
    page.click("#run")
    page.wait_for_function("document.querySelector('#result-video').duration > 0", timeout=60_000)
    assert page.is_visible("#download")
    assert page.get_attribute("#download", "href").startswith("blob:")
    assert page.inner_text("#status") == "completed"

    bad = np.random.default_rng(3).bytes(4000)
    expected = httpx.post(
        f"{server.url}/v1/jobs", data={"task": "opc"}, files={"video": ("bad.mp4", bad)}
    ).json()["error"]["message"]
    page.set_input_files(
        "#video-file", files=[{"name": "bad.mp4", "mimeType": "video/mp4", "buffer": bad}]
    )
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert page.inner_text("#error") == expected
    page.close()


def test_page_with_api_keys(browser, tiny_checkpoint, tmp_path):
    srv = Server(make_settings(tiny_checkpoint, tmp_path, api_keys=["s3cret"])).start()
    try:
        page = browser.new_page(bypass_csp=True)  # the test polls with eval; the page needs none
        page.goto(srv.url + "/")
        page.wait_for_selector("#error:not([hidden])")
        assert "API key" in page.inner_text("#error")
        page.fill("#api-key", "s3cret")
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("label[data-code=cg]")
        page.wait_for_load_state("networkidle")
        page.click("label[data-code=cg]")
        page.fill("input[name=steps]", "1")
        page.click("#run")
        page.wait_for_function(
            "document.querySelector('#result-video').duration > 0", timeout=60_000
        )
        assert page.is_hidden("#error")
        page.close()
    finally:
        srv.stop()


def test_the_playground_runs_under_its_content_security_policy(browser, server):
    page = browser.new_page()  # the policy enforced
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security" in m.text else 0)
    page.goto(server.url + "/")
    page.wait_for_selector("label[data-code=opc]", timeout=30_000)  # drawn by app.js from the API
    page.click("label[data-code=cg]")
    page.fill("input[name=steps]", "1")
    page.click("#run")
    page.wait_for_selector("#download:visible", timeout=60_000)
    assert violations == []
    page.close()


def test_frame_prediction_makes_a_long_video(browser, server):
    page = browser.new_page(bypass_csp=True)  # the test polls with eval; the page needs none
    page.goto(server.url + "/")
    page.click("label[data-code=opc]")
    page.wait_for_selector("#frames-row", state="hidden")
    page.click("label[data-code=fp]")
    page.wait_for_selector("#frames-row:not([hidden])")
    assert page.get_attribute("input[name=frames]", "max") == "128"
    clip = videos.clip("webm", frames=10)
    page.set_input_files(
        "#video-file", files=[{"name": "clip.webm", "mimeType": "video/webm", "buffer": clip}]
    )
    page.fill("input[name=steps]", "1")
    page.fill("input[name=frames]", "24")  # three seconds at 8 frames a second
    page.click("#run")
    page.wait_for_function("document.querySelector('#result-video').duration > 0", timeout=60_000)
    assert page.evaluate("document.querySelector('#result-video').duration") > 2.5
    assert page.inner_text("#status") == "completed"
    page.close()


def test_a_frame_step_can_be_typed(browser, server):
    page = browser.new_page(bypass_csp=True)  # the test polls with eval; the page needs none
    page.goto(server.url + "/")
    page.click("label[data-code=cg]")
    page.wait_for_selector("#frame-step-row", state="hidden")
    page.click("label[data-code=opc]")
    page.wait_for_selector("#frame-step-row:not([hidden])")
    assert page.get_attribute("input[name=frame_step]", "placeholder") == "auto"
    clip = videos.clip("webm", frames=16)
    page.set_input_files(
        "#video-file", files=[{"name": "clip.webm", "mimeType": "video/webm", "buffer": clip}]
    )
    page.fill("input[name=steps]", "1")
    page.fill("input[name=frame_step]", "2")
    with page.expect_response(lambda r: r.url.endswith("/v1/jobs")) as created:
        page.click("#run")
    job = created.value.json()
    page.wait_for_function("document.querySelector('#result-video').duration > 0", timeout=60_000)
    assert page.inner_text("#status") == "completed"
    stored = server.app.state.magvit.queue.get(job["id"]).spec
    assert stored.frame_step == 2 and stored.frame_rate == 4.0
    page.close()
