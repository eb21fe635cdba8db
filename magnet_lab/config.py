"""Configuration from the environment: every ``MAGNET_LAB_*`` variable, read here and nowhere else.

``VARIABLES`` is the one table (docs/configuration.md lists the same rows, and a test keeps the
two equal). Values are read at call time, so a test or notebook that sets a variable after
import is honoured. An unset or empty variable means its default.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, what it sets and its default (as prose)."""

    name: str
    sets: str
    default: str


VARIABLES: tuple[Variable, ...] = (
    Variable("MAGNET_LAB_ROOT", "the repository root every default path derives from",
             "the folder above the package"),
    Variable("MAGNET_LAB_DATA_DIR", "shipped artefacts (embedded weights, sidecars)", "ROOT/data"),
    Variable("MAGNET_LAB_FIGURES_DIR", "where figures (PNG + PDF + JSON) are written",
             "ROOT/figures"),
    Variable("MAGNET_LAB_REPORTS_DIR", "executed notebooks and results JSON", "ROOT/reports"),
    Variable("MAGNET_LAB_CACHE_DIR", "volume banks and feature caches", "REPORTS_DIR/cache"),
    Variable("MAGNET_LAB_FMNIST_DIR", "the folder of the four Fashion-MNIST IDX files",
             "/usr/share/datasets/fashion-mnist"),
    Variable("MAGNET_LAB_PROGRESS", "`0` turns every progress bar off", "bars on where asked"),
    Variable("MAGNET_LAB_HEADLESS", "`1` skips widgets (papermill, tests)", "widgets shown"),
    Variable("MAGNET_LAB_SPECTRA_MEMORY", "the memory budget of one spectra call, e.g. `4GiB`",
             "half the free CUDA memory; 2 GiB on a CPU"),
    Variable("MAGNET_LAB_INCEPTION_WEIGHTS", "a local copy of the FID Inception weights",
             "none: FID in Inception space is refused"),
    Variable("MAGNET_LAB_VGG16_WEIGHTS", "a local copy of torchvision's VGG16 weights",
             "none: the VGG feature space is refused"),
    Variable("MAGNET_LAB_CHROMIUM", "the chromium binary the browser test drives",
             "`chromium` on PATH"),
    Variable("MAGNET_LAB_NO_CONDA", "`1` makes scripts/setup.sh use a .venv even with conda",
             "conda when present"),
)
_NAMES = frozenset(v.name for v in VARIABLES)


def get(name: str) -> str | None:
    """The value of the ``MAGNET_LAB_*`` variable ``name``, stripped; None when unset or empty.
    Raises KeyError for a name not in ``VARIABLES`` (so a typo cannot silently read nothing)."""
    if name not in _NAMES:
        raise KeyError(f"{name} is not a magnet_lab variable; known: {sorted(_NAMES)}")
    value = os.environ.get(name, "").strip()
    return value or None


def path(name: str, default: Path) -> Path:
    """The folder or file that variable ``name`` names (expanded, resolved), else ``default``."""
    value = get(name)
    return Path(value).expanduser().resolve() if value else default


def flag(name: str) -> bool | None:
    """Variable ``name`` as a switch: True for ``1``, False for ``0``, None when unset. Raises
    ValueError naming the variable for any other value."""
    value = get(name)
    if value is None:
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{name}={value!r}: expected 0 or 1")
    return value == "1"


def progress_enabled(requested: bool | None) -> bool:
    """Whether to show a progress bar: never when ``MAGNET_LAB_PROGRESS=0``; otherwise as
    ``requested`` (None: on). Every bar in magnet_lab asks here."""
    if flag("MAGNET_LAB_PROGRESS") is False:
        return False
    return True if requested is None else bool(requested)


def headless() -> bool:
    """True when ``MAGNET_LAB_HEADLESS=1`` (papermill, tests): widgets are skipped."""
    return flag("MAGNET_LAB_HEADLESS") is True


@contextlib.contextmanager
def overridden(values: dict[str, str]) -> Iterator[None]:
    """Set the ``MAGNET_LAB_*`` variables in ``values`` for the block (child processes, e.g. a
    papermill kernel, inherit them), restoring the previous values afterwards."""
    for name in values:
        get(name)  # refuses unknown names
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
