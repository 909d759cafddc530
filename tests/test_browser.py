"""The course as a learner meets it: JupyterLab in a real browser (headless Chromium).

Starts a JupyterLab server on localhost over a temporary copy of two notebooks, drives Debian's
``chromium`` with Playwright, runs every cell through JupyterLab's own "Run All Cells" menu item,
saves through the UI, and checks the saved notebook: every code cell ran and none raised. In the
n-gram chapter it then moves the explorer's ``n`` slider with the keyboard and asserts that the
widget's plot changes. Screenshots go to ``test-artifacts/browser/``.

Needs ``chromium`` on PATH (``apt-get install chromium``) and the ``playwright`` Python package (test
extra); Playwright's own browser download is not used. Skipped where either is missing, except under
CI (``CI=true``), where a missing browser is a failure.
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
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
RUN_TIMEOUT_S = 600  # all cells of one notebook, quick mode, a contended 2-core machine
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _requirements() -> str | None:
    if shutil.which("chromium") is None:
        return "chromium is not on PATH (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


_missing = _requirements()
if _missing and os.environ.get("CI") == "true":
    raise RuntimeError(f"the browser test must run in CI: {_missing}")
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a temporary folder holding copies of the tested notebooks."""
    work = tmp_path_factory.mktemp("lab")
    for name in ("00_tour.ipynb", "01_ngrams.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, work / name)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "MINILLM_QUICK": "1", "PYTHONPATH": str(ROOT),
           "JUPYTER_CONFIG_DIR": str(work / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(work / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(work / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / ".workspaces")}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the plots into the page
    log = open(work / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}",
         "--ServerApp.open_browser=False", "--allow-root", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("JupyterLab did not start:\n" + (work / "jupyter.log").read_text()[-3000:])
            time.sleep(0.5)
    yield {"url": url, "token": token, "dir": work}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                              args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, lab, name: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    # a workspace of its own per notebook, so tabs restored from another test do not interfere
    page.goto(f"{lab['url']}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # A notebook saved without kernel metadata asks which kernel to start, as it would a learner:
    # accept the offered Python 3 kernel.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and "Select Kernel" in dialog.first.inner_text():
            dialog.first.locator("button.jp-mod-accept").click()
            break
        if page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() and \
                "Python" in page.locator(".jp-Toolbar-kernelName").first.inner_text():
            break
        time.sleep(0.5)
    # the kernel is up when the execution indicator reports idle
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
    return page


def _run_all_and_save(page, lab, name: str) -> dict:
    """Run All Cells from the menu bar, wait until no cell is queued or running, save with Ctrl+S,
    and return the notebook as saved on disk."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()
    path = lab["dir"] / name
    deadline = time.monotonic() + RUN_TIMEOUT_S
    quiet = 0
    while quiet < 3:  # three polls in a row with nothing queued and the kernel idle
        if time.monotonic() > deadline:
            page.screenshot(path=str(ARTIFACTS / f"{name}-timeout.png"), full_page=True)
            pytest.fail(f"{name}: cells still running after {RUN_TIMEOUT_S} s")
        busy = page.evaluate("""() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            const pending = prompts.filter(p => /\\[\\*\\]|\\[ \\]|^\\s*$/.test(p.textContent)).length;
            const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return pending + (ind && ind.dataset.status !== 'idle' ? 1 : 0);
        }""")
        quiet = quiet + 1 if busy == 0 else 0
        time.sleep(1.0)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        page.screenshot(path=str(ARTIFACTS / f"{name}-dialog.png"))
        pytest.fail(f"{name}: JupyterLab shows a dialog: {dialog.first.inner_text()[:500]!r}")
    before = path.stat().st_mtime_ns
    page.locator(".jp-Notebook:visible").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while path.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            pytest.fail(f"{name}: Ctrl+S did not save the notebook")
        time.sleep(0.5)
    time.sleep(1.0)  # let the write finish
    return json.loads(path.read_text(encoding="utf-8"))


def _assert_ran_cleanly(nb: dict, name: str) -> None:
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert code, f"{name} has no code cells"
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not not_run, f"{name}: code cells {not_run} did not run"
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(code)
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name}: cells raised {errors}"


def test_tour_runs_in_jupyterlab(browser, lab):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = _open(browser, lab, "00_tour.ipynb")
    nb = _run_all_and_save(page, lab, "00_tour.ipynb")
    page.screenshot(path=str(ARTIFACTS / "00_tour.png"), full_page=False)
    _assert_ran_cleanly(nb, "00_tour.ipynb")
    page.close()


def test_ngram_explorer_widget_responds(browser, lab):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = _open(browser, lab, "01_ngrams.ipynb")
    nb = _run_all_and_save(page, lab, "01_ngrams.ipynb")
    _assert_ran_cleanly(nb, "01_ngrams.ipynb")

    cell = page.locator(".jp-CodeCell").filter(has=page.locator(".widget-slider")).first
    cell.scroll_into_view_if_needed()
    plot = cell.locator(".widget-output img").first
    plot.wait_for(state="visible", timeout=60_000)
    before = plot.get_attribute("src")
    page.screenshot(path=str(ARTIFACTS / "01_ngrams-widget-before.png"))

    slider = cell.locator(".widget-slider").first  # the first slider: n
    readout = slider.locator(".widget-readout")
    n_before = readout.inner_text().strip()
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowLeft")  # n: 5 -> 4
    deadline = time.monotonic() + 60
    after = before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.5)
        img = cell.locator(".widget-output img").first
        after = img.get_attribute("src") if img.count() else before
    page.screenshot(path=str(ARTIFACTS / "01_ngrams-widget-after.png"))
    assert readout.inner_text().strip() == str(int(n_before) - 1), "the n slider did not move"
    assert after != before, "moving the n slider did not redraw the explorer's plot"
    page.close()
