"""The explorer notebook in a real browser: JupyterLab + headless Chromium driven by Playwright.

A JupyterLab server (free local port, random token, outputs and cache under a temp dir) opens a
smoke-sized copy of ``notebooks/00_explore.ipynb``; Chromium runs all its cells, moves every
control of the explorer and checks that the grid, the ESS readout and the histogram change, that
an extreme ρ is flagged, that the save button writes a figure with its sidecar, and that the
browser logged no error. Skipped, with the reason, where Playwright or a Chromium executable is
missing (``scripts/setup.sh`` installs both where it can: pip's ``playwright`` and Debian's
``chromium``; Playwright's own browser download is not used). The server, its kernels and the
browser are stopped by the fixtures whatever happens.
"""
from __future__ import annotations

import json
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

ROOT = Path(__file__).resolve().parent.parent
SMOKE = {"smoke": True, "seed": 0, "n_candidates": 200, "n_hist": 128,
         "pr_results": "no-03-results.json"}  # no P–R plane: it needs the real test set's features
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.notebook


def _chromium() -> str:
    """Path of a Chromium executable (``MAGNET_LAB_CHROMIUM`` or Debian's), or skip saying why."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (the browser extra: pip install -e '.[browser]')")
    for candidate in (os.environ.get("MAGNET_LAB_CHROMIUM"), shutil.which("chromium"),
                      "/usr/bin/chromium", shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no Chromium executable (Debian: apt-get install chromium, which scripts/setup.sh "
                "does as root; or set MAGNET_LAB_CHROMIUM)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smoke_notebook(directory: Path) -> Path:
    """``00_explore.ipynb`` with the smoke parameters injected (papermill's own injection) and
    the kernel set to ``python3``, which a server started by this interpreter runs in this
    environment."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / "00_explore.ipynb")),
                               SMOKE)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = directory / "00_explore.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def lab(output_dirs, tmp_path_factory):
    """A JupyterLab server on a free port over a temp folder holding the smoke notebook: yields
    ``(url_of_the_notebook, figures_dir)``; shuts the server (and its kernels) down afterwards,
    killing its process group if it does not stop in time."""
    chromium = _chromium()
    work = tmp_path_factory.mktemp("lab")
    _smoke_notebook(work)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, MAGNET_LAB_PROGRESS="0", JUPYTER_CONFIG_DIR=str(work / ".config"),
               JUPYTER_RUNTIME_DIR=str(work / ".runtime"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("MAGNET_LAB_HEADLESS", None)
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--ServerApp.port_retries=0", f"--LabApp.workspaces_dir={work / '.ws'}",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        # meanwhile build the bank the notebook will find in the cache (same identity)
        import magnet_lab
        from magnet_lab import experiment

        experiment.candidate_bank(magnet_lab.load_generator("fmnist-dcgan"), "fmnist-dcgan",
                                  SMOKE["n_candidates"], seed=SMOKE["seed"])  # exact
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + (work / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield {"url": f"{base}/lab/tree/00_explore.ipynb?token={token}", "chromium": chromium,
               "api": f"{base}/api/kernels?token={token}",
               "figures": output_dirs / "figures", "log": work / "server.log"}
    finally:
        try:  # a clean stop also shuts the kernels down (they run in their own sessions)
            req = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=5)
            server.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


_DIGEST = """async (sel) => {
  const el = document.querySelector(sel);
  if (!el || !el.src) return null;
  const bytes = await (await fetch(el.src)).arrayBuffer();
  const hash = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(hash)).map(b => b.toString(16).padStart(2, "0")).join("");
}"""


def _view(page) -> dict:
    """What the explorer shows now: digests of the grid and histogram PNGs, the readout text
    and its health class."""
    return {"grid": page.evaluate(_DIGEST, "img.magnet-grid"),
            "hist": page.evaluate(_DIGEST, "img.magnet-hist"),
            "ess": page.inner_text(".magnet-ess"),
            "health": page.get_attribute(".magnet-ess span", "class")}


def _after(page, before: dict, must_change: tuple[str, ...], timeout: float = 60) -> dict:
    """Wait until every view part in ``must_change`` differs from ``before`` and the view is
    stable (the kernel has caught up with the key presses); return the new view."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        now = _view(page)
        if all(now[k] != before[k] for k in must_change) and now == last:
            return now
        last = now
        page.wait_for_timeout(700)
    raise AssertionError(f"explorer did not redraw {must_change}: before {before}, now {last}")


def _kernel_ready(page, timeout: float = 90) -> None:
    """Wait until the notebook's kernel is idle, answering JupyterLab's "Select Kernel" dialog
    (shown when several kernels are installed, e.g. a user-level ``magnet_lab`` one) with the
    notebook's own ``python3``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            dialog.locator("select").select_option(label="Python 3 (ipykernel)")
            dialog.locator(".jp-mod-accept").click()
        elif page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count():
            return
        page.wait_for_timeout(500)
    raise AssertionError("the notebook's kernel did not become idle")


def _kernel_connected(api: str, timeout: float = 60) -> None:
    """Wait until the server reports one idle kernel with a websocket connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernels = json.loads(urllib.request.urlopen(api, timeout=5).read())
        if kernels and all(k["execution_state"] == "idle" and k["connections"] > 0 for k in kernels):
            return
        time.sleep(0.5)
    raise AssertionError(f"no connected idle kernel: {kernels}")


def test_explorer_notebook_runs_in_chromium_and_every_control_redraws(lab):
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=lab["chromium"], headless=True,
                                    args=["--no-sandbox", "--disable-gpu",
                                          "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("console", lambda m: errors.append(f"console: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(lab["url"])
            page.wait_for_selector(".jp-Notebook", timeout=TIMEOUT_MS)
            _kernel_ready(page)
            _kernel_connected(lab["api"])
            for attempt in range(2):  # a kernel websocket refused under load is reconnected
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator('li[data-command="runmenu:run-all"]').click()
                try:  # the first code cell gets a prompt number (or *) once the kernel runs it
                    page.wait_for_function(
                        "() => /\\[[0-9*]+\\]/.test(document.querySelector("
                        "'.jp-CodeCell .jp-InputPrompt').innerText)", timeout=30_000)
                    break
                except Exception:
                    if attempt:
                        raise
                    _kernel_connected(lab["api"])
            page.wait_for_selector("img.magnet-grid", timeout=TIMEOUT_MS)
            view = _after(page, {"grid": None, "hist": None, "ess": None, "health": None},
                          ("grid", "hist"))
            assert view["health"] == "magnet-health-ok" and "ESS/N = 1.00e+00" in view["ess"]

            steps = [  # (control, keys or action, what must change)
                (".magnet-rho .noUi-handle", ["Home"], ("grid", "ess", "hist")),  # ρ = −3
                (".magnet-topk .noUi-handle", ["ArrowLeft"] * 3, ("grid", "ess", "hist")),
                (".magnet-fraction .noUi-handle", ["ArrowLeft"] * 4, ("grid", "ess", "hist")),
                (".magnet-psi .noUi-handle", ["ArrowLeft"] * 4, ("grid", "hist")),
                (".magnet-replace input", "click", ("grid", "hist")),
                (".magnet-seed input", "seed", ("grid", "hist")),
            ]
            for i, (selector, keys, must_change) in enumerate(steps):
                if keys == "click":
                    page.click(selector)
                elif keys == "seed":
                    page.fill(selector, "7")
                    page.press(selector, "Enter")
                else:
                    page.focus(selector)
                    for key in keys:
                        page.keyboard.press(key)
                view = _after(page, view, must_change)
                if i == 0:  # ρ = −3 on a 200-candidate bank: ESS ≈ 1, flagged
                    assert view["health"] in ("magnet-health-thin", "magnet-health-low"), view
                    assert "THIN" in view["ess"] or "LOW ESS" in view["ess"], view

            page.click("button.magnet-save")
            page.wait_for_function(
                "() => document.querySelector('.magnet-status').innerText.startsWith('saved')",
                timeout=TIMEOUT_MS)
        except Exception:
            page.screenshot(path=str(lab["log"].with_name("failure.png")))
            (lab["log"].with_name("failure.html")).write_text(page.content())
            raise
        finally:
            browser.close()
    wall = time.monotonic() - t0
    saved = sorted(lab["figures"].glob("00_explore_fmnist-dcgan_*"))
    assert {f.suffix for f in saved} == {".png", ".pdf", ".json"}, saved
    side = json.loads(next(f for f in saved if f.suffix == ".json").read_text())
    params = side["parameters"]
    assert params["generator"] == "fmnist-dcgan" and params["rho"] == -3.0
    assert params["seed"] == 7 and params["replace"] is True and params["n_candidates"] == 200
    assert params["bank_identity"] and Path(params["bank_path"]).is_dir()
    assert side["provenance"]["versions"]["torch"]
    assert errors == [], "\n".join(errors)
    print(f"browser session: {wall:.1f} s")
