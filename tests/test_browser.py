"""The explorer notebook in a real browser: JupyterLab driven by headless Chromium (playwright).

The test starts JupyterLab on 127.0.0.1 with a random port and token and the repository's own
Jupyter directories (as ``make lab``), on a copy of ``notebooks/07_explorer.ipynb`` in a
temporary folder (autosave must not write outputs into the repository). Chromium runs all
cells from the Run menu in smoke mode, the test moves the explorer's "slice at" slider, checks
that the widget's figure changed and that no cell shows an error, and saves a screenshot
under ``results/browser/``.

Needs pip's ``playwright`` (requirements.txt) and Debian's ``chromium`` (playwright's own
browser download is not reachable here); ``make test`` installs chromium when it runs as root
with apt, otherwise this test skips, naming the command.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "07_explorer.ipynb"
SCREENSHOTS = REPO / "results" / "browser"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
RUN_TIMEOUT_MS = 240_000
_JUPYTER_DIRS = {
    "JUPYTER_CONFIG_DIR": ".jupyter/config",
    "JUPYTER_DATA_DIR": ".jupyter/data",
    "JUPYTER_RUNTIME_DIR": ".jupyter/runtime",
    "IPYTHONDIR": ".ipython",
    "MPLCONFIGDIR": ".mplconfig",
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _chromium() -> str:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no chromium executable: install Debian's browser with `sudo apt-get install chromium` "
        "(make test does it when run as root)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited ({process.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} in {timeout} s:\n{log.read_text()}")


@pytest.fixture
def jupyter_lab(tmp_path: Path):
    """``(base url, token)`` of a JupyterLab serving a copy of the explorer notebook."""
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / NOTEBOOK, root / "notebooks" / NOTEBOOK)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for var, default in _JUPYTER_DIRS.items():
        env.setdefault(var, str(REPO / default))
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    env.update(SAMLAB_SMOKE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS") or "1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log = tmp_path / "jupyter.log"
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--IdentityProvider.token={token}", f"--notebook-dir={root / 'notebooks'}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{base}/api/status?token={token}", process, log)
        yield base, token
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _widget_image(page):
    """The ``src`` of the figure the explorer widget shows."""
    image = page.locator(".widget-interact .jp-OutputArea-output img").first
    image.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
    return image.get_attribute("src")


def _settled_image(page, quiet_s: float = 2.0, timeout_s: float = 120.0):
    """The widget's figure once it has stopped changing for ``quiet_s`` (queued redraws done)."""
    deadline = time.monotonic() + timeout_s
    current = _widget_image(page)
    while time.monotonic() < deadline:
        page.wait_for_timeout(quiet_s * 1000)
        latest = _widget_image(page)
        if latest == current:
            return latest
        current = latest
    raise TimeoutError(f"the explorer's figure kept changing for {timeout_s} s")


def test_explorer_runs_and_redraws_in_chromium(jupyter_lab):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (pinned in requirements.txt)"
    )
    executable = _chromium()
    base, token = jupyter_lab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            # The kernel is started and idle before any cell runs.
            page.get_by_text("| Idle").first.wait_for(timeout=RUN_TIMEOUT_MS)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            page.get_by_text("notebook ran in").first.wait_for(timeout=RUN_TIMEOUT_MS)
            page.get_by_text("| Idle").first.wait_for(timeout=RUN_TIMEOUT_MS)
            news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's news question
            if news.count():
                news.first.click()

            errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
            assert errors.count() == 0, errors.first.inner_text()
            before = _widget_image(page)
            assert before and before.startswith("data:image/png")

            # Move the "slice at" slider five steps to the right with the keyboard.
            slider = page.locator(".widget-slider", has_text="slice at").locator(".noUi-handle")
            slider.first.focus()
            for _ in range(5):
                page.keyboard.press("ArrowRight")
            page.wait_for_function(
                """previous => {
                    const img = document.querySelector(
                        '.widget-interact .jp-OutputArea-output img');
                    return img !== null && img.getAttribute('src') !== previous;
                }""",
                arg=before,
                timeout=RUN_TIMEOUT_MS,
            )
            after = _settled_image(page)
            assert after != before, "the explorer's figure did not change after the slider moved"
            assert errors.count() == 0, errors.first.inner_text()
            page.screenshot(path=str(SCREENSHOTS / "explorer_page.png"), full_page=False)
            page.locator(".widget-interact").first.screenshot(
                path=str(SCREENSHOTS / "explorer_widget.png")
            )
        finally:
            browser.close()
