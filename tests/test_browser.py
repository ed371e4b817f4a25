"""The notebooks' widgets as a person uses them: JupyterLab in headless Chromium.

nbval compares a widget cell's text, not what a person gets; these tests open the notebooks in a
real JupyterLab, run the widget cells from a fresh kernel and use the controls with the mouse and
the keyboard. They need Debian's Chromium (`apt-get install -y chromium`) and Playwright for
Python, which drives it (its own browser download is not used). On a machine without Chromium
they are skipped with that line; in CI (`DEEPLAB_KIT_CI=1`, set by .ci/run) a missing browser
fails. Run them alone with `pytest -m browser`.

`python tests/test_browser.py --screenshot` regenerates README's picture of the rate explorer.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("DEEPLAB_KIT_CHROMIUM", "/usr/bin/chromium"))
EXPLORER = "notebooks/02_atrous_convolution.ipynb"
REPORT = "notebooks/06_report.ipynb"
SCREENSHOT = ROOT / "notebooks" / "results" / "rate_explorer.png"
FALLBACKS = (
    "Loading widget",
    "Error displaying widget",
    "AtrousRateExplorer(",
    "PredictionBrowser(",
)
# Chromium as the machine's closed network wants it: no background connections, no sandbox
# (root in a container), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.browser


def _require_chromium() -> Path:
    if CHROMIUM.is_file():
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM}: install Debian's with `apt-get install -y chromium`"
    if os.environ.get("DEEPLAB_KIT_CI"):
        pytest.fail(message + " (CI installs it in .ci/run)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on the checkout, on 127.0.0.1 with a random token and port, its
    configuration, runtime, settings and workspaces in a temporary folder."""

    def __init__(self, folder: Path, disabled: tuple[str, ...] = ()) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = folder / "settings"
        _write_settings(settings)
        if disabled:  # lab extensions switched off in the page config (to break the widgets)
            labconfig = folder / "config" / "labconfig"
            labconfig.mkdir(parents=True)
            pages = {"disabledExtensions": {name: True for name in disabled}}
            (labconfig / "page_config.json").write_text(json.dumps(pages))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(folder / "config"),
            "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces"),
            "DEEPLAB_KIT_PROFILE": "quick",
            "MPLBACKEND": "Agg",
        }
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={ROOT}",
            "--ServerApp.port_retries=0",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
        ]  # window.jupyterapp: run cells
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        self.log = open(folder / "jupyter.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_until_up(folder / "jupyter.log")

    def api(self, path: str, method: str = "GET", body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def _wait_until_up(self, log: Path, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited at start:\n{log.read_text()[-2000:]}")
            try:
                self.api("status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"JupyterLab did not answer /api/status in {timeout} s")

    def stop(self) -> None:
        """The shutdown API first; then only the process this fixture started."""
        try:
            self.api("shutdown", method="POST")
            self.process.wait(timeout=20)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def _write_settings(settings: Path) -> None:
    """No autosave (the tests must not rewrite the notebooks), no news pop-up."""
    plugins = {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        # every cell in the page (no virtual scrolling), so that cell k is the k-th in the DOM
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for name, values in plugins.items():
        path = settings / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_chromium()
    server = JupyterLab(tmp_path_factory.mktemp("jupyter"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, lab):
    """A page that records console errors and page errors; none may happen."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    errors = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.errors = errors
    yield page
    context.close()
    assert not [e for e in errors if not _harmless(e)], errors


def _harmless(error: str) -> bool:
    """Chromium's own complaint about a favicon or the closed network is not the page's."""
    return "favicon" in error or "net::ERR_" in error


# --- driving JupyterLab -----------------------------------------------------------------------


def open_fresh(page, lab, notebook: str):
    """Open `notebook` with a fresh kernel (any earlier session of it is shut down first)."""
    for session in lab.api("sessions"):
        if session.get("path") == notebook:
            lab.api(f"sessions/{session['id']}", method="DELETE")
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:  # the new kernel has started and is idle
        kernels = [s["kernel"] for s in lab.api("sessions") if s.get("path") == notebook]
        if kernels and kernels[0].get("execution_state") == "idle":
            return page
        time.sleep(0.25)
    raise AssertionError(f"{notebook}: its kernel did not start")


SELECT_CELL = """text => {
    const notebook = window.jupyterapp.shell.currentWidget.content;
    const index = notebook.widgets.findIndex(c => c.model.sharedModel.getSource().includes(text));
    if (index >= 0) {
        notebook.activeCellIndex = index;
        notebook.widgets[index].node.setAttribute("data-kit-test", "target");  // to find it again
    }
    return index;
}"""


def run_through(page, text: str):
    """Run every cell up to and including the one containing `text` (the commands behind Edit >
    Clear Outputs of All Cells, Run > Run All Above and Run Selected Cell), and wait until that
    one has an execution count: a fresh kernel's, never a stored output's."""
    index = page.evaluate(SELECT_CELL, text)
    assert index >= 0, f"no cell containing {text!r}"
    # Stored outputs and counts go first (unsaved: autosave is off), so a count is a new one.
    for command in (
        "notebook:clear-all-cell-outputs",
        "notebook:run-all-above",
        "notebook:run-cell",
    ):
        page.evaluate("command => window.jupyterapp.commands.execute(command)", command)
    cell = page.locator(".jp-Notebook .jp-Cell[data-kit-test='target']")
    page.wait_for_function(
        "el => /\\[\\d+\\]/.test(el.textContent)",
        arg=cell.locator(".jp-InputPrompt").element_handle(),
        timeout=4 * STEP_TIMEOUT_MS,
    )
    return cell


def real_widget(cell, what: str, wait: float = 30):
    """The cell's widget output, after making sure it is a widget and not its text fallback."""
    output = cell.locator(".jp-OutputArea-output").last
    output.wait_for()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        text = output.inner_text()
        if cell.locator(".widget-slider, .jupyter-widgets").count() and not any(
            f in text for f in FALLBACKS
        ):
            return output
        time.sleep(0.25)
    raise AssertionError(f"the {what} widget fell back to text: {output.inner_text()[:200]!r}")


def readouts(output) -> list[str]:
    return [r.inner_text().strip() for r in output.locator(".widget-readout").all()]


IMAGE_BYTES = """async img => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return {head: Array.from(bytes.slice(0, 4)), sha256: Array.from(digest).join(".")};
}"""


def image_bytes(output) -> dict:
    """The shown image's first bytes and a hash of all of them (the widget serves its PNG as a
    blob: URL, which the page fetches)."""
    return output.locator("img").first.evaluate(IMAGE_BYTES)


def wait_for_change(read, before, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = read()
        if now != before:
            return now
        time.sleep(0.2)
    raise AssertionError(f"{what} did not change")


# --- notebook 02: the rate explorer ----------------------------------------------------------


@pytest.fixture
def explorer(page, lab):
    open_fresh(page, lab, EXPLORER)
    cell = run_through(page, "widgets.atrous_rate_explorer(")
    return real_widget(cell, "rate explorer")


def test_the_explorer_renders_real_sliders_with_the_notebooks_rates(explorer):
    assert explorer.locator(".widget-slider").count() == 3
    assert readouts(explorer) == ["6", "12", "18"]
    assert explorer.locator(".widget-toggle-buttons button").count() >= 3  # output strides
    assert explorer.locator("input[type='number']").count() == 1  # the input size
    assert image_bytes(explorer)["head"] == [0x89, ord("P"), ord("N"), ord("G")]
    assert "33x33" in explorer.inner_text()  # 513 px at output stride 16


def test_arrow_right_moves_a_rate_and_redraws_figure_and_table(explorer):
    before_image, before_table = image_bytes(explorer), explorer.locator("table").inner_text()
    explorer.locator(".noUi-handle").first.focus()
    explorer.page.keyboard.press("ArrowRight")
    wait_for_change(lambda: readouts(explorer)[0], "6", "the first rate's readout")
    assert readouts(explorer) == ["7", "12", "18"]
    wait_for_change(lambda: image_bytes(explorer), before_image, "the figure")
    table = wait_for_change(
        lambda: explorer.locator("table").inner_text(), before_table, "the table"
    )
    assert "rate 7" in table and "112" in table  # 7 x 16 px between taps


def test_a_drag_raises_a_rate(explorer):
    handle = explorer.locator(".noUi-handle").nth(1)
    box = handle.bounding_box()
    page = explorer.page
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    after = wait_for_change(lambda: readouts(explorer)[1], "12", "the dragged rate")
    assert int(after) > 12


def test_the_stride_toggle_changes_the_map_size(explorer):
    explorer.locator(".widget-toggle-buttons button", has_text="8").first.click()
    wait_for_change(lambda: "65x65" in explorer.inner_text(), False, "the summary line")
    assert "output stride 8" in explorer.inner_text()


# --- notebook 06: the prediction browser -----------------------------------------------------


def test_the_prediction_browser_slider_changes_the_image(page, lab):
    open_fresh(page, lab, REPORT)
    cell = run_through(page, "widgets.prediction_browser(")
    browser = real_widget(cell, "prediction browser")
    before = image_bytes(browser)
    browser.locator(".noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    wait_for_change(lambda: readouts(browser)[0], "0", "the sample readout")
    wait_for_change(lambda: image_bytes(browser), before, "the shown image")


# --- the suite notices a broken widget --------------------------------------------------------


def test_without_the_widget_manager_the_suite_reports_a_text_fallback(browser, tmp_path):
    """With ipywidgets' JupyterLab extension disabled, the explorer shows as text: the check
    every widget test relies on must say so."""
    broken = JupyterLab(tmp_path, disabled=("@jupyter-widgets/jupyterlab-manager",))
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        open_fresh(page, broken, EXPLORER)
        cell = run_through(page, "widgets.atrous_rate_explorer(")
        with pytest.raises(AssertionError, match="the rate explorer widget fell back to text"):
            real_widget(cell, "rate explorer", wait=5)
        context.close()
    finally:
        broken.stop()


# --- README's picture ------------------------------------------------------------------------


def screenshot(path: Path = SCREENSHOT) -> Path:
    """Run the explorer in a JupyterLab and save a PNG of the widget."""
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        lab = JupyterLab(Path(folder))
        try:
            with sync_playwright() as driver:
                chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = chromium.new_page(viewport={"width": 1400, "height": 1100})
                page.set_default_timeout(STEP_TIMEOUT_MS)
                open_fresh(page, lab, EXPLORER)
                cell = run_through(page, "widgets.atrous_rate_explorer(")
                real_widget(cell, "rate explorer").screenshot(path=str(path))
                chromium.close()
        finally:
            lab.stop()
    return path


if __name__ == "__main__" and "--screenshot" in sys.argv:
    print(f"saved {screenshot()}")
    shutil.rmtree(ROOT / "notebooks" / ".ipynb_checkpoints", ignore_errors=True)
