"""A gallery opened from disk (file://) in Debian's headless Chromium: every image decodes, every
video loads its metadata, no link is broken and no script from model output runs.

Needs /usr/bin/chromium and /usr/bin/chromedriver (`.ci/install-browser.sh`) and selenium. Skipped
without them, unless RLAB_REQUIRE_BROWSER=1 (CI), where their absence is a failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from shared.gallery import build_gallery, write_demo_run
from shared.tracking.media import MediaRecord, append_media

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The machine has no internet: without the background-networking flags Chromium waits on connections.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
    "--window-size=1280,1600",
)
LOAD_TIMEOUT_S = 15.0

# What the page holds once loaded. Read by polling: images decode and videos load asynchronously.
PAGE_STATE_JS = """
return {
  images: Array.from(document.images).map(i => (
    {src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth})),
  videos: Array.from(document.querySelectorAll('video')).map(v => (
    {src: v.currentSrc, ready: v.readyState, network: v.networkState,
     error: v.error ? v.error.code : null, width: v.videoWidth})),
  links: Array.from(document.querySelectorAll('[src], [href]')).map(e => e.src || e.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  scripts: document.querySelectorAll('script').length,
};
"""


def _require_browser() -> None:
    required = os.environ.get("RLAB_REQUIRE_BROWSER", "") not in ("", "0")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"browser test needs {', '.join(missing)} (run .ci/install-browser.sh; pip install selenium)"
        if required:
            pytest.fail(f"RLAB_REQUIRE_BROWSER is set but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(LOAD_TIMEOUT_S)
    try:
        yield browser
    finally:
        browser.quit()


def _hostile_run(root: Path, name: str, reward_offset: float = 0.0) -> Path:
    """The demo run plus what a misbehaving model could write, and a missing file."""
    run = write_demo_run(root / "runs" / "vlm" / name, seed=3, reward_offset=reward_offset)
    # viewBox only (no width/height), with a script inside: shown through <img>, the script never runs
    (run / "media" / "model.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 10">'
        '<rect width="20" height="10" fill="navy"/><script>alert("svg")</script></svg>'
    )
    append_media(run, MediaRecord("svg", path="media/model.svg", step=200, item="item-0"))
    fields = {"prompt": "<img src=x onerror=alert(1)>", "completion": "<script>alert(1)</script>"}
    fields["verdict"] = "wrong"
    append_media(run, MediaRecord("trace", step=200, item="item-1", fields=fields))
    append_media(run, MediaRecord("image", path="media/never-written.png", step=200))
    return run


def _load_and_wait(browser: object, index: Path) -> dict:
    """Open `index` and poll until every image is decoded and every video has metadata (or failed)."""
    browser.get(index.resolve().as_uri())
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while True:
        state = browser.execute_script(PAGE_STATE_JS)
        settled = all(i["complete"] for i in state["images"]) and all(
            v["ready"] >= 1 or v["error"] is not None or v["network"] == 3 for v in state["videos"]
        )
        if settled or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def _assert_page_ok(browser: object, index: Path, state: dict, n_videos: int) -> None:
    root = index.parent.resolve()
    broken_images = [i["src"] for i in state["images"] if not (i["complete"] and i["width"] > 0)]
    assert not broken_images, f"images that did not decode: {broken_images}"
    assert len(state["videos"]) == n_videos
    for video in state["videos"]:
        loaded = video["error"] is None and video["ready"] >= 1 and video["width"] > 0
        assert loaded, f"video did not load: {video}"
    for link in state["links"]:
        parts = urlsplit(link)
        assert parts.scheme == "file", f"link leaves the disk: {link}"
        target = Path(unquote(parts.path)).resolve()
        assert target.is_relative_to(root) and target.is_file(), f"broken link: {link}"
        if parts.fragment:
            assert parts.fragment in state["ids"], f"anchor without target: {link}"
    assert state["scripts"] == 0
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"console errors: {severe}"


def test_single_run_gallery_loads_in_chromium(driver: object, tmp_path: Path) -> None:
    run = _hostile_run(tmp_path, "demo-20250101-000000")
    with pytest.warns(UserWarning, match="never-written.png"):
        index = build_gallery([run])
    state = _load_and_wait(driver, index)
    _assert_page_ok(driver, index, state, n_videos=2)
    assert len(state["images"]) >= 10
    text = driver.find_element("tag name", "body").text
    assert "<script>alert(1)</script>" in text  # shown as text, not run
    assert "missing: media/never-written.png" in text
    assert driver.save_screenshot(str(tmp_path / "gallery.png"))


def test_two_run_item_gallery_loads_in_chromium(driver: object, tmp_path: Path) -> None:
    a = _hostile_run(tmp_path, "a-20250101-000000")
    b = _hostile_run(tmp_path, "b-20250101-000000", reward_offset=0.1)
    with pytest.warns(UserWarning):
        index = build_gallery([a, b], tmp_path / "compare", group_by="item")
    state = _load_and_wait(driver, index)
    _assert_page_ok(driver, index, state, n_videos=4)
