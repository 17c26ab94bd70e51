"""The real page in a real browser: `tiepoint ui` on a free loopback port, driven by Playwright in
Debian's Chromium (`apt-get install chromium`; Playwright's own browser download is not needed)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import unavailable
from PIL import Image

import tiepoint
from tiepoint.ui.app import EXAMPLE
from tiepoint.ui.session import all_pipelines

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright)")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        unavailable("Debian's chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(eval_results, tmp_path_factory):
    try:
        import gradio  # noqa: F401
    except ImportError:
        unavailable("gradio is not installed (pip install 'tiepoint[ui]')")
    port = free_port()
    log = tmp_path_factory.mktemp("ui_server") / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiepoint.cli",
                "ui",
                "--port",
                str(port),
                "--results",
                str(eval_results),
                "--allow",
                str(EXAMPLE),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tiepoint ui exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("tiepoint ui did not start within 120 s")
    yield url, log
    proc.terminate()
    proc.wait(timeout=30)


def not_blank(path: Path) -> None:
    a = np.asarray(Image.open(path).convert("L"), np.float32)
    assert a.std() > 10, f"{path} looks blank (std {a.std():.1f})"


def cells(page, table: str, row: str) -> dict[str, str]:
    tr = page.locator(f'{table} tr[data-row="{row}"]')
    return {td.get_attribute("data-k"): td.inner_text() for td in tr.locator("td").all()}


def choose(page, elem_id: str, value: str) -> None:
    """Pick a value of a Gradio dropdown the way a user does: type, then click the option."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()


def test_page_match_estimator_side_by_side_and_inspector(
    browser, server, tmp_path, official_weights
):
    official_weights("xfeat", "xfeat-lighterglue")
    url, log = server
    img0, img1 = EXAMPLE / "box.png", EXAMPLE / "box_in_scene.png"
    truth = tiepoint.match(img0, img1, pipeline="sift+nn", resize=512)
    _, inl_cv = truth.homography(estimator="opencv")
    _, inl_pl = truth.homography(estimator="poselib", threshold=1.0)

    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(300_000)  # a loaded CI machine
    page.goto(url)
    page.wait_for_selector("#run")
    choose(page, "pipeline", "sift+nn")
    page.get_by_label("resize (long side, 0: native)").fill("512")
    page.locator("#run").click()
    page.wait_for_selector('#counts tr[data-row="sift+nn"]')
    shown = cells(page, "#counts", "sift+nn")
    assert int(shown["keypoints0"]) == len(truth.keypoints0)
    assert int(shown["keypoints1"]) == len(truth.keypoints1)
    assert int(shown["matches"]) == len(truth)
    assert int(shown["inliers"]) == inl_cv.sum()
    assert "pipeline runs so far: 1" in page.locator("#status").inner_text()
    page.wait_for_selector("#img-warp img")
    shot = tmp_path / "match.png"
    page.screenshot(path=shot, full_page=True)
    not_blank(shot)
    if os.environ.get("TIEPOINT_UI_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["TIEPOINT_UI_SCREENSHOT"])

    # the estimator and threshold change without re-matching
    page.locator("#estimator").get_by_label("poselib").check()
    page.get_by_label("inlier threshold px (0: the estimator's default)").fill("1")
    page.locator("#estimate").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('poselib')")
    status = page.locator("#status").inner_text()
    assert "from cache, not re-matched; pipeline runs so far: 1" in status
    shown = cells(page, "#counts", "sift+nn")
    assert int(shown["inliers"]) == inl_pl.sum() and shown["cached"] == "True"
    assert int(shown["matches"]) == len(truth)

    # side by side: two pipelines, the first one straight from the cache
    page.get_by_role("tab", name="Side by side").click()
    boxes = page.locator("#sbs-pipelines")
    for name in [s.label() for s in all_pipelines()]:
        box = boxes.get_by_label(name, exact=True)
        box.check() if name in ("sift+nn", "xfeat+lighterglue") else box.uncheck()
    page.locator("#sbs-run").click()
    page.wait_for_selector("#sbs-counts tr[data-row]")
    rows = page.locator("#sbs-counts tr[data-row]").all()
    assert len(rows) == 2
    sift = cells(page, "#sbs-counts", "sift+nn")
    assert int(sift["matches"]) == len(truth) and sift["cached"] == "True"
    o = cells(page, "#sbs-counts", "xfeat+lighterglue")
    assert 0 < int(o["inliers"]) <= int(o["matches"])
    assert float(o["inlier_ratio"]) == pytest.approx(
        int(o["inliers"]) / int(o["matches"]), abs=1e-3
    )
    page.wait_for_selector("#sbs-gallery img")
    shot = tmp_path / "sbs.png"
    page.screenshot(path=shot, full_page=True)
    not_blank(shot)

    # the inspector on the runs `tiepoint eval pairs` wrote: show, then click a scatter point
    page.get_by_role("tab", name="Benchmark inspector").click()
    page.locator("#inspect-show").click()
    page.wait_for_selector("#scatter circle.tp-pair")
    assert page.locator("#scatter circle.tp-pair").count() == 2
    page.wait_for_selector("#curves img")
    pair = page.locator("#scatter circle.tp-pair").first.get_attribute("data-pair")
    page.locator("#scatter circle.tp-pair").first.click()
    page.wait_for_selector("#pair-rows tr[data-row]")
    assert page.locator("#pair-rows tr[data-row]").count() == 2
    assert pair in page.locator("#ins-status").inner_text()
    page.wait_for_selector("#pair-gallery img")
    assert "sift2k" in page.locator("#summary").inner_text()
    shot = tmp_path / "inspector.png"
    page.screenshot(path=shot, full_page=True)
    not_blank(shot)

    # bad inputs give one line in the page: a corrupt upload, a pipeline without weights
    page.get_by_role("tab", name="Match").click()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    page.locator("#source").get_by_label("upload").check()
    page.locator("#file0 input[type=file]").set_input_files(str(corrupt))
    page.locator("#file1 input[type=file]").set_input_files(str(img1))
    page.wait_for_selector("#file1 >> text=box_in_scene.png")
    page.locator("#run").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('image A:')")
    assert "corrupt" in page.locator("#status").inner_text()
    missing = [s for s in all_pipelines() if s.problem() and not s.error]
    if missing:
        page.locator("#source").get_by_label("bundled example").check()
        choose(page, "pipeline", missing[0].label())
        page.locator("#run").click()
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('not in the cache')"
        )
        shown = page.locator("#status").inner_text().strip()  # Markdown: `code` loses its ticks
        assert shown == f"⚠️ {missing[0].problem()}".replace("`", "")
    assert "Traceback" not in log.read_text()
    page.close()
