"""The attention explorer in a real browser: JupyterLab on 127.0.0.1, headless Chromium through playwright.

Opens notebooks/02_attention_explorer.ipynb, runs all cells, and asserts that the explorer rendered
(its canvas drawn in the page, no error output), that choosing another segment draws it with the block
the live kernel sends, that hovering a cell reads it out, and that no request left 127.0.0.1 (the
widgets work offline: no CDN). A screenshot is saved; set RMT_LAB_SCREENSHOTS=figures to keep it in figures/.

Needs Debian's chromium (/usr/bin/chromium; CI: apt-get install -y chromium) and the playwright
package; skipped with the reason when either is missing. JupyterLab's config, data, runtime, settings
and workspace folders, and the kernel's TMPDIR, point into a temporary folder: the test writes nothing into
the home folder, the repository (the notebook is served from a temporary copy) or elsewhere in /tmp.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "02_attention_explorer.ipynb"
CHROMIUM = Path(os.environ.get("RMT_LAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "rmt-lab-browser-test"
LOOPBACK = "127.0.0.1"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the playwright package is not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(importlib.util.find_spec("rmt_lab.trace") is None,
                       reason=f"{NOTEBOOK} needs rmt_lab.trace, which this checkout does not have yet"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _api(port: int, path: str, method: str = "GET"):
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _settings(folder: Path) -> None:
    """User settings: start the kernel without asking, no news pop-up, never autosave the served copy."""
    for plugin, values in {
        "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    }.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebook; yields its port."""
    with serve_notebook(tmp_path, ROOT / "notebooks" / NOTEBOOK) as port:
        yield port


@contextlib.contextmanager
def serve_notebook(tmp_path: Path, notebook: Path):
    """Run JupyterLab on 127.0.0.1 over a copy of `notebook` in served/notebooks/; yields its port (the explorer
    benchmark serves its own notebook through this too)."""
    served = tmp_path / "served"
    (served / "notebooks").mkdir(parents=True)
    shutil.copy(notebook, served / "notebooks" / notebook.name)
    for name in ("pyproject.toml", "data"):  # the notebook finds the repository root (and its results) by these
        (served / name).symlink_to(ROOT / name)
    home = tmp_path / "jupyter"
    _settings(home / "settings")
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ)
    env.update({
        "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(home / "ipython"), "MPLCONFIGDIR": str(home / "mpl"),
        # the notebook's own folders (tempfile.mkdtemp: its trace, its exported views) go with tmp_path, not
        # into /tmp, where nothing would remove them
        "TMPDIR": str(tmp_path / "tmp"),
    })
    port = _free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ip={LOOPBACK}", f"--port={port}",
               f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={served}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=served)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _api(port, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield port
    finally:
        try:
            _api(port, "/api/shutdown", method="POST")  # stops its kernels too
            server.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            server.terminate()
            server.wait(timeout=20)
        log.close()


def run_all_cells(page, port: int, notebook: str) -> None:
    """Open a served notebook in the page, wait for its kernel, run every cell (returns without waiting for them)."""
    page.goto(f"http://{LOOPBACK}:{port}/lab/tree/notebooks/{notebook}?token={TOKEN}")
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session", timeout=90_000)
    page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel", timeout=90_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def _kernels_idle(port: int) -> bool:
    kernels = _api(port, "/api/kernels")
    return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)


def test_attention_explorer_renders_in_chromium_offline(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    port = jupyterlab
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.on("request", lambda r: requests.append(r.url))
            run_all_cells(page, port, NOTEBOOK)
            drawn = ".rmt-attention-explorer .rmt-explorer[data-drawn]"
            page.wait_for_selector(drawn, timeout=240_000)
            page.wait_for_selector("text=current_view.svg", timeout=120_000)  # the last cell ran
            deadline = time.monotonic() + 60
            while not _kernels_idle(port):  # the server's view of the kernel, not the page's indicator
                assert time.monotonic() < deadline, "the kernel stayed busy after the last cell"
                time.sleep(0.5)

            explorer = page.locator(".rmt-attention-explorer .rmt-explorer").first
            sample, segment, layer, head = explorer.get_attribute("data-drawn").split("/")
            options = explorer.locator("select[name=segment] option").evaluate_all("os => os.map(o => o.value)")
            other = next(o for o in options if o != segment)
            explorer.locator("select[name=segment]").select_option(other)  # a block the kernel has not sent yet
            page.wait_for_function(f"document.querySelector('{drawn}').dataset.drawn === "
                                   f"{json.dumps(f'{sample}/{other}/{layer}/{head}')}", timeout=60_000)
            plot = json.loads(explorer.get_attribute("data-plot"))
            explorer.locator("canvas.rmt-overlay").scroll_into_view_if_needed()  # the mouse only reaches the viewport
            box = explorer.locator("canvas.rmt-overlay").bounding_box()
            cell = plot["size"] / plot["cells"]
            page.mouse.move(box["x"] + plot["x"] + 0.5 * cell, box["y"] + plot["y"] + 1.5 * cell)
            readout = explorer.locator(".rmt-readout").inner_text()
            assert readout.startswith('query 1 "[mem 0]"') and f"segment {other}" in readout, readout
            page.wait_for_timeout(300)

            errors = page.evaluate(
                "[...document.querySelectorAll('.jp-OutputArea-output')]"
                ".filter(o => o.querySelector('[data-mime-type=\"application/vnd.jupyter.stderr\"]')"
                " && /Traceback|Error/.test(o.innerText)).map(o => o.innerText.slice(0, 500))")
            assert not errors, errors
            widget_errors = page.locator(".jupyter-widgets-error-widget, .jp-RenderedText:has-text('Error displaying widget')")
            assert widget_errors.count() == 0, "a widget failed to render"

            shot = tmp_path / "attention_explorer_browser.png"
            explorer.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("RMT_LAB_SCREENSHOTS")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(keep) / shot.name)
        finally:
            browser.close()

    outside = sorted({u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
                      and urlparse(u).hostname != LOOPBACK})
    assert not outside, f"the page requested hosts other than {LOOPBACK}: {outside[:10]}"
    assert any(urlparse(u).hostname == LOOPBACK for u in requests)
