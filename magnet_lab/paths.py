"""Where magnet_lab reads and writes: the one paths module.

Every location is derived from ``ROOT`` (the repository) and can be overridden by an environment
variable, so tests and papermill runs can write under a temporary directory:

============== ============================== ==========================================
name           default                        environment override
============== ============================== ==========================================
ROOT           the repository root            ``MAGNET_LAB_ROOT``
DATA_DIR       ROOT/data                      ``MAGNET_LAB_DATA_DIR``  (shipped artefacts)
FIGURES_DIR    ROOT/figures                   ``MAGNET_LAB_FIGURES_DIR``
REPORTS_DIR    ROOT/reports (gitignored)      ``MAGNET_LAB_REPORTS_DIR`` (executed notebooks, results)
NOTEBOOKS_DIR  ROOT/notebooks                 --
CACHE_DIR      ROOT/reports/cache             ``MAGNET_LAB_CACHE_DIR`` (banks, feature caches)
============== ============================== ==========================================

The functions (not module constants) read the environment at call time, so a test that sets
a variable after import is honoured.
"""
from __future__ import annotations

from pathlib import Path

from . import config

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _env_path(var: str, default: Path) -> Path:
    return config.path(var, default)


def root() -> Path:
    """The repository root (``MAGNET_LAB_ROOT`` overrides)."""
    return _env_path("MAGNET_LAB_ROOT", _PACKAGE_ROOT)


def data_dir() -> Path:
    """Small shipped artefacts: embedded weights and their training records."""
    return _env_path("MAGNET_LAB_DATA_DIR", root() / "data")


def figures_dir() -> Path:
    """Where figures (PNG + PDF + JSON sidecar) are written; created on demand."""
    path = _env_path("MAGNET_LAB_FIGURES_DIR", root() / "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def reports_dir() -> Path:
    """Executed notebooks and results JSON (gitignored); created on demand."""
    path = _env_path("MAGNET_LAB_REPORTS_DIR", root() / "reports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Volume banks and feature caches that are expensive to recompute; created on demand."""
    path = _env_path("MAGNET_LAB_CACHE_DIR", reports_dir() / "cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def notebooks_dir() -> Path:
    """The numbered notebooks."""
    return root() / "notebooks"


ROOT = root()
DATA_DIR = data_dir()
NOTEBOOKS_DIR = notebooks_dir()
