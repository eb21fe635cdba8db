"""Run the numbered notebooks headlessly with papermill: the main job and the tests' harness.

Notebooks live in ``notebooks/NN_name.ipynb`` and take papermill parameters (``seed``, ``smoke``,
``results_path`` and their own). Executed copies go to ``paths.reports_dir()`` (gitignored), each
next to its results JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import config, paths

KERNEL_NAME = "magnet_lab"


def notebooks() -> list[Path]:
    """The numbered notebooks, in execution order (``01_…``, ``02_…``, …)."""
    return sorted(p for p in paths.notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def find_notebook(key: str) -> Path:
    """The notebook whose file name starts with ``key`` (``"01"`` or ``"01_spline_sanity"``).

    Raises FileNotFoundError listing the available notebooks when none (or several) match.
    """
    matches = [p for p in notebooks() if p.stem == key or p.stem.startswith(f"{key}_")]
    if len(matches) != 1:
        names = ", ".join(p.stem for p in notebooks()) or "(none)"
        raise FileNotFoundError(f"no unique notebook matches {key!r}; available: {names}")
    return matches[0]


def same_environment(python: str) -> bool:
    """Whether the interpreter path ``python`` belongs to this process's environment.

    Compared by folder without resolving symlinks: a venv's ``bin/python`` is a link to the base
    interpreter, so resolving would make every venv built from it look like this one.
    """
    exe = Path(python)
    return exe.is_absolute() and exe.parent.absolute() == Path(sys.executable).parent.absolute()


def _kernel_for_this_interpreter() -> str:
    """``magnet_lab`` if that kernel runs in this very environment, else the built-in ``python3``
    (which Jupyter starts with ``sys.executable``).

    Tests must run notebooks in the environment under test, not whatever a stale kernel points to.
    """
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if same_environment(spec.argv[0]):
            return KERNEL_NAME
    except Exception:  # no such kernel, or an unreadable spec
        pass
    return "python3"


def run_notebook(key: str, parameters: dict[str, Any] | None = None, *,
                 out_dir: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Execute notebook ``key`` with papermill and return its results JSON as a dict.

    The executed copy is written to ``out_dir/<name>.ipynb`` (default ``paths.reports_dir()``);
    ``results_path`` defaults to ``out_dir/<name>.json``; relative paths are taken from the
    caller's working directory, not the notebook's. A smoke run (``parameters["smoke"]``) writes
    its figures to ``out_dir/figures`` unless ``MAGNET_LAB_FIGURES_DIR`` is set, so a cheap
    check never overwrites the figures of a full run. Raises papermill's
    PapermillExecutionError (with the failing cell) if the notebook fails, and FileNotFoundError
    if it ran but wrote no results.
    """
    import papermill as pm

    src = find_notebook(key)
    # absolute: the kernel runs in the notebooks folder, where a relative path means elsewhere
    out_dir = Path(out_dir).resolve() if out_dir is not None else paths.reports_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(parameters or {})
    params.setdefault("results_path", str(out_dir / f"{src.stem}.json"))
    results_path = Path(params["results_path"]).resolve()
    params["results_path"] = str(results_path)
    if results_path.exists():
        results_path.unlink()  # never report a stale result as this run's
    env = {"MAGNET_LAB_HEADLESS": "1"}  # inherited by the kernel: no widgets
    if not progress:
        env["MAGNET_LAB_PROGRESS"] = "0"  # no progress bars in reports
    if params.get("smoke") and config.get("MAGNET_LAB_FIGURES_DIR") is None:
        env["MAGNET_LAB_FIGURES_DIR"] = str(out_dir / "figures")
    with config.overridden(env):
        pm.execute_notebook(str(src), str(out_dir / src.name), parameters=params,
                            kernel_name=_kernel_for_this_interpreter(), cwd=str(src.parent),
                            progress_bar=progress)
    if not results_path.exists():
        raise FileNotFoundError(f"{src.name} ran but wrote no results to {results_path}")
    return json.loads(results_path.read_text())
