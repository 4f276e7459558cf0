"""Every notebook in a real browser: JupyterLab driven by headless Chromium (playwright).

One JupyterLab per module, on 127.0.0.1 with a random port and token and the repository's own
Jupyter configuration and data directories (as ``make lab``), serves copies of all the notebooks
in ``notebooks/`` from a temporary folder (autosave must not write outputs into the repository;
the notebooks' ``../results`` lands in that folder too). Its runtime and IPython directories are
temporary ones of this run, not the repository's: the IPython directory holds this run's image
counter (a startup file, see below), and the runtime directory the connection files of this
server's kernels, which the test reads to reach that counter. For each notebook Chromium opens it,
runs all cells from the Run menu in smoke mode and waits until the kernel is idle and every
code cell has an execution count. The test then checks that no cell has an error output (read
from the notebook's model: JupyterLab 4 renders errors with the stderr mime type) and no stderr
output in the page shows a traceback or an error line (warnings are only recorded), that every
image the kernel sent is rendered as a loaded ``<img>`` in the page (and that a notebook using
matplotlib shows at least one), saves a screenshot of the whole notebook as
``results/browser/<notebook>.png`` with its timings and stderr in ``<notebook>.json``, then
closes the notebook and shuts its kernel down. The explorer notebook also has its "slice at"
slider moved, and the widget's figure must change. Chromium loads JupyterLab once; the
notebooks open one after the other in that page.

How many images the kernel sent is counted inside the kernel: the server's IPython directory is
a temporary one whose startup file wraps the kernel session's ``send`` and keeps, per parent
message, the images the frontend should be showing (a ``clear_output`` empties them, as it does
the output area). The test reads that count through a second client on the kernel's connection
file (a silent execute with a user expression: no execution count, no output in the page).

Needs pip's ``playwright`` (requirements.txt) and Debian's ``chromium`` (playwright's own
browser download is not reachable here); ``make test`` installs chromium when it runs as root
with apt, otherwise these tests skip, naming the command.
"""

from __future__ import annotations

import ast
import json
import os
import re
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
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPLORER = "07_explorer.ipynb"
SCREENSHOTS = REPO / "results" / "browser"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
RUN_TIMEOUT_MS = 300_000  # one notebook's Run All in smoke mode, on 2 busy cores
WIDGET_TIMEOUT_MS = 60_000  # the explorer figure showing, and redrawing after the slider moved
VIEWPORT = {"width": 1400, "height": 1000}
MAX_SCREENSHOT_HEIGHT = 30_000  # pixels; a taller notebook is cut there
_JUPYTER_DIRS = {  # the repository's own, unless the caller (make) set them
    "JUPYTER_CONFIG_DIR": ".jupyter/config",
    "JUPYTER_DATA_DIR": ".jupyter/data",
    "MPLCONFIGDIR": ".mplconfig",
}
# JupyterLab settings for the test's server: every cell rendered (JupyterLab 4 otherwise renders
# only the cells in view, and the page would not hold every output), no news or update question.
_LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
        "scrollPastEnd": False,
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
# IPython startup file of the test's kernels: count the images the output areas should show.
_IMAGE_COUNTER = '''\
"""Counts the images this kernel sends to the frontend (tests/test_browser.py reads it)."""


def _samlab_install_image_counter():
    import functools

    kernel = getattr(get_ipython(), "kernel", None)  # get_ipython: a builtin in startup files
    if kernel is None:
        return lambda: None
    shown, clear_on_next = {}, set()  # parent msg id -> images shown; pending clear(wait=True)
    send = kernel.session.send

    @functools.wraps(send)
    def counting_send(stream, msg_or_type, content=None, parent=None, *args, **kwargs):
        try:
            kind, body, header = msg_or_type, content, parent
            if isinstance(msg_or_type, dict):  # a message built by the caller
                kind = msg_or_type.get("header", {}).get("msg_type")
                body = msg_or_type.get("content")
                header = msg_or_type.get("parent_header")
            key = header.get("msg_id") if isinstance(header, dict) else None
            if kind == "clear_output":
                if (body or {}).get("wait"):
                    clear_on_next.add(key)
                else:
                    shown[key] = 0
            elif kind in ("display_data", "execute_result", "stream"):
                if key in clear_on_next:
                    clear_on_next.discard(key)
                    shown[key] = 0
                data = (body or {}).get("data", {})
                if kind != "stream" and any(m.startswith("image/") for m in data):
                    shown[key] = shown.get(key, 0) + 1
        except Exception:  # counting must never break the kernel
            pass
        return send(stream, msg_or_type, content, parent, *args, **kwargs)

    kernel.session.send = counting_send
    return lambda: sum(shown.values())


_samlab_images_shown = _samlab_install_image_counter()
del _samlab_install_image_counter
'''
# Errors: JupyterLab 4 renders an error output with the stderr mime type, so the notebook's
# model is asked for outputs of type "error"; what the page shows as stderr (a widget's output
# too) counts as an error when it holds a traceback or an error line; warnings are reported only.
_STDERR_OUTPUTS = '.jp-Notebook [data-mime-type="application/vnd.jupyter.stderr"]'
_STDERR_ERROR = re.compile(r"Traceback \(most recent call last\)|^\w*Error\b|^Exception\b", re.M)

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


class Lab:
    """A running JupyterLab: its URL, token, runtime folder and REST calls."""

    def __init__(self, base: str, token: str, runtime: Path):
        self.base, self.token, self.runtime = base, token, runtime

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(
            f"{self.base}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def session(self, notebook: str) -> dict | None:
        """The server's session of ``notebook`` (its kernel), or None."""
        return next((s for s in self.api("sessions") if s["path"] == notebook), None)

    def shutdown(self, notebook: str) -> None:
        """End the notebook's session and kernel."""
        session = self.session(notebook)
        if session is not None:
            self.api(f"sessions/{session['id']}", method="DELETE")

    def evaluate(self, notebook: str, expression: str):
        """``expression`` evaluated in the notebook's kernel through a second, silent client."""
        from jupyter_client import BlockingKernelClient

        session = self.session(notebook)
        assert session is not None, f"no kernel session for {notebook}: {self.api('sessions')}"
        client = BlockingKernelClient(
            connection_file=str(self.runtime / f"kernel-{session['kernel']['id']}.json")
        )
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=30)
            msg_id = client.execute(
                "", silent=True, store_history=False, user_expressions={"value": expression}
            )
            while True:
                reply = client.get_shell_msg(timeout=30)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        finally:
            client.stop_channels()
        value = reply["content"]["user_expressions"]["value"]
        assert value["status"] == "ok", f"{expression} failed in the kernel: {value}"
        return ast.literal_eval(value["data"]["text/plain"])


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory):
    """A JupyterLab serving copies of every notebook, for all the tests of this module."""
    tmp = tmp_path_factory.mktemp("lab")
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, notebooks / path.name)
    settings = tmp / "settings"
    for name, values in _LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    startup = tmp / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-count-images.py").write_text(_IMAGE_COUNTER)
    runtime = tmp / "runtime"

    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for var, default in _JUPYTER_DIRS.items():
        env.setdefault(var, str(REPO / default))
    env.update(JUPYTER_RUNTIME_DIR=str(runtime), IPYTHONDIR=str(tmp / "ipython"))
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    env.update(SAMLAB_SMOKE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS") or "1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log = tmp / "jupyter.log"
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--IdentityProvider.token={token}", f"--notebook-dir={notebooks}",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to close the sidebar
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{base}/api/status?token={token}", process, log)
        yield Lab(base, token, runtime)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def browser_tools():
    """``(playwright.sync_api, chromium executable)``; skips, naming the fix, when one lacks."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (pinned in requirements.txt)"
    )
    return sync_api, _chromium()


@pytest.fixture(scope="module")
def lab_page(browser_tools, jupyter_lab: Lab):
    """A headless Chromium page (Debian's browser, driven by playwright) with JupyterLab loaded
    once, its left sidebar closed; each test opens its notebook in it and closes it after.
    (``browser_tools`` comes first: without a browser the tests skip before JupyterLab starts.)"""
    sync_api, executable = browser_tools
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{jupyter_lab.base}/lab/workspaces/browser-test?token={jupyter_lab.token}")
            page.wait_for_function("() => window.jupyterapp !== undefined", timeout=120_000)
            page.evaluate("() => window.jupyterapp.restored")  # layout restored, plugins active
            if page.locator("#jp-left-stack").is_visible():
                page.evaluate(
                    "() => window.jupyterapp.commands.execute('application:toggle-left-area')"
                )
            yield page
        finally:
            browser.close()


def _uses_matplotlib(path: Path) -> bool:
    source = "\n".join(
        "".join(cell["source"])
        for cell in json.loads(path.read_text())["cells"]
        if cell["cell_type"] == "code"
    )
    return re.search(r"^\s*(import|from) matplotlib", source, re.M) is not None


# JavaScript: the code cells of the open notebook ``path`` as its model holds them: execution
# count, and "cell N: Name: message" of each error output
_CODE_CELLS = """path => {
    const panel = [...window.jupyterapp.shell.widgets('main')]
        .find(w => w.context?.path === path);
    if (!panel) { return null; }
    const cells = [];
    for (let i = 0; i < panel.content.model.cells.length; i++) {
        const cell = panel.content.model.cells.get(i).toJSON();
        if (cell.cell_type !== 'code') { continue; }
        cells.push({count: cell.execution_count, errors: cell.outputs
            .filter(o => o.output_type === 'error')
            .map(o => `cell ${i}: ${o.ename}: ${o.evalue}`)});
    }
    return cells;
}"""
# JavaScript: Run All is over when the kernel is idle and every code cell has an execution
# count, or when a cell failed (JupyterLab then leaves the cells after it unrun)
_RUN_FINISHED = (
    "path => { const cells = (" + _CODE_CELLS + ")(path);"
    " return cells !== null && cells.length > 0 && document.body.innerText.includes('| Idle')"
    " && (cells.every(c => c.count !== null) || cells.some(c => c.errors.length > 0)); }"
)

_RENDERED_IMAGES = """() => [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img')]
    .filter(img => img.complete && img.naturalWidth > 0).length"""


# JavaScript: close every document of the main area without saving (outputs stay in the
# temporary copy only as long as the test needs them)
_CLOSE_ALL = """() => {
    for (const widget of [...window.jupyterapp.shell.widgets('main')]) {
        if (widget.context?.model) { widget.context.model.dirty = false; }
        widget.dispose();
    }
}"""


_OPEN = "path => window.jupyterapp.commands.execute('docmanager:open', {path, factory: 'Notebook'})"


def _run_all(page, notebook: str, seconds: dict) -> None:
    """Open ``notebook`` (its kernel starts), run all its cells from the Run menu; time both."""
    started = time.monotonic()
    page.evaluate(_OPEN, notebook)
    page.locator(".jp-NotebookPanel").first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.get_by_text("| Idle").first.wait_for(timeout=RUN_TIMEOUT_MS)  # kernel started, idle
    seconds["open"] = time.monotonic() - started
    started = time.monotonic()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    page.wait_for_function(_RUN_FINISHED, arg=notebook, timeout=RUN_TIMEOUT_MS, polling=500)
    seconds["run_all"] = time.monotonic() - started


def _errors(page, notebook: str) -> list[str]:
    """Every error output of the notebook, and every stderr output that reports an error."""
    found = [e for cell in page.evaluate(_CODE_CELLS, notebook) for e in cell["errors"]]
    found += [t for t in _stderr(page) if _STDERR_ERROR.search(t)]
    return found


def _stderr(page) -> list[str]:
    return [e.inner_text() for e in page.locator(_STDERR_OUTPUTS).all()]


def _wait_for_images(page, expected: int, timeout_s: float = 60) -> int:
    """How many output images are loaded, once at least ``expected`` are (or after timeout)."""
    deadline = time.monotonic() + timeout_s
    count = page.evaluate(_RENDERED_IMAGES)
    while count < expected and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        count = page.evaluate(_RENDERED_IMAGES)
    return count


# JavaScript: the notebook's scrolling element (JupyterLab 4, or the notebook itself before it)
_SCROLLER = """(document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer')
    || document.querySelector('.jp-NotebookPanel .jp-Notebook'))"""


def _screenshot(page, path: Path) -> None:
    """The whole notebook from its top: the page is made as tall as the notebook's content (up
    to ``MAX_SCREENSHOT_HEIGHT``; re-measured, as the layout can change with the size), captured,
    and given its size back."""
    height = VIEWPORT["height"]
    try:
        for _ in range(4):
            extra = page.evaluate(f"() => {_SCROLLER}.scrollHeight - {_SCROLLER}.clientHeight")
            if extra <= 0 or height >= MAX_SCREENSHOT_HEIGHT:
                break
            height = min(height + extra, MAX_SCREENSHOT_HEIGHT)
            page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
            page.wait_for_timeout(500)  # relayout
        page.evaluate(f"() => {{ {_SCROLLER}.scrollTop = 0; }}")
        page.wait_for_timeout(200)
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(VIEWPORT)


def _widget_image(page):
    """The ``src`` of the figure the explorer widget shows."""
    image = page.locator(".widget-interact .jp-OutputArea-output img").first
    image.wait_for(state="visible", timeout=WIDGET_TIMEOUT_MS)
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


def _move_explorer_slider(page) -> None:
    """Move the explorer's "slice at" slider five steps; its figure must change."""
    before = _widget_image(page)
    assert before and before.startswith("data:image/png")
    slider = page.locator(".widget-slider", has_text="slice at").locator(".noUi-handle")
    slider.first.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        """previous => {
            const img = document.querySelector('.widget-interact .jp-OutputArea-output img');
            return img !== null && img.getAttribute('src') !== previous;
        }""",
        arg=before,
        timeout=WIDGET_TIMEOUT_MS,
    )
    after = _settled_image(page)
    assert after != before, "the explorer's figure did not change after the slider moved"
    page.screenshot(path=str(SCREENSHOTS / "explorer_page.png"), full_page=False)
    page.locator(".widget-interact").first.screenshot(path=str(SCREENSHOTS / "explorer_widget.png"))


def test_notebooks_found():
    """An empty notebooks folder is a failure, not zero silently skipped browser tests."""
    assert NOTEBOOKS, f"no notebooks in {REPO / 'notebooks'}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_chromium(path: Path, lab_page, jupyter_lab: Lab):
    notebook, page = path.name, lab_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    try:
        _run_all(page, notebook, seconds)
        errors = _errors(page, notebook)
        assert not errors, f"{notebook} shows errors in the browser:\n" + "\n---\n".join(errors)
        unrun = [
            i for i, c in enumerate(page.evaluate(_CODE_CELLS, notebook)) if c["count"] is None
        ]
        assert not unrun, f"{notebook}: code cells {unrun} (counting code cells) did not run"

        started = time.monotonic()
        sent = jupyter_lab.evaluate(notebook, "_samlab_images_shown()")
        assert sent is not None, "the image counter is not installed in the kernel"
        rendered = _wait_for_images(page, sent)
        seconds["count_images"] = time.monotonic() - started
        started = time.monotonic()
        _screenshot(page, SCREENSHOTS / f"{path.stem}.png")
        seconds["screenshot"] = time.monotonic() - started
        report = {
            "notebook": notebook,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "ran_in": re.findall(
                r"notebook (?:ran in|took) [\d.]+ s", page.inner_text(".jp-Notebook")
            ),
            "images_sent_by_kernel": sent,
            "images_rendered": rendered,
            "stderr": _stderr(page),
        }
        (SCREENSHOTS / f"{path.stem}.json").write_text(json.dumps(report, indent=1) + "\n")
        assert rendered >= sent, (
            f"{notebook}: the kernel sent {sent} images, the page renders {rendered}"
        )
        if _uses_matplotlib(path):
            assert sent >= 1, f"{notebook} imports matplotlib but showed no figure"

        if notebook == EXPLORER:
            _move_explorer_slider(page)
            errors = _errors(page, notebook)
            assert not errors, f"{notebook} shows errors after the slider moved:\n" + "\n".join(
                errors
            )
    finally:
        page.evaluate(_CLOSE_ALL)
        jupyter_lab.shutdown(notebook)
