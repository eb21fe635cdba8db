"""magnet_lab.config: the one table of environment variables, read in one module."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from magnet_lab import config

ROOT = Path(__file__).resolve().parent.parent


def test_every_variable_used_anywhere_is_in_the_table_and_the_docs():
    """No MAGNET_LAB_* name appears in the package, scripts, Makefile or setup without a row in
    config.VARIABLES, and docs/configuration.md lists exactly the table's names."""
    names = {v.name for v in config.VARIABLES}
    used = set()
    for path in [*ROOT.glob("magnet_lab/**/*.py"), *ROOT.glob("scripts/*"), *ROOT.glob("tests/*.py"),
                 ROOT / "Makefile"]:
        used |= set(re.findall(r"MAGNET_LAB_[A-Z0-9_]+", path.read_text()))
    assert used <= names, used - names
    documented = set(re.findall(r"`(MAGNET_LAB_[A-Z0-9_]+)`", (ROOT / "docs/configuration.md").read_text()))
    assert documented == names


def test_only_config_reads_the_environment_for_magnet_lab_variables():
    for path in ROOT.glob("magnet_lab/**/*.py"):
        if path.name == "config.py":
            continue
        text = path.read_text()
        assert not re.search(r"environ(\.get)?\(?\[?[\"']MAGNET_LAB_", text), path
        assert "os.environ" not in text or "MAGNET_LAB_" not in "".join(
            line for line in text.splitlines() if "os.environ" in line), path


def test_flags_progress_and_overrides(monkeypatch):
    monkeypatch.delenv("MAGNET_LAB_PROGRESS", raising=False)
    assert config.progress_enabled(None) and not config.progress_enabled(False)
    monkeypatch.setenv("MAGNET_LAB_PROGRESS", "0")
    assert not config.progress_enabled(True) and not config.progress_enabled(None)
    monkeypatch.setenv("MAGNET_LAB_PROGRESS", "yes")
    with pytest.raises(ValueError, match="MAGNET_LAB_PROGRESS='yes': expected 0 or 1"):
        config.progress_enabled(None)
    monkeypatch.setenv("MAGNET_LAB_HEADLESS", "")
    assert config.get("MAGNET_LAB_HEADLESS") is None and not config.headless()
    with config.overridden({"MAGNET_LAB_HEADLESS": "1"}):
        assert config.headless()
    assert not config.headless()
    with pytest.raises(KeyError, match="not a magnet_lab variable"):
        config.get("MAGNET_LAB_" + "TYPO")
    monkeypatch.setenv("MAGNET_LAB_CACHE_DIR", "~/x")
    assert config.path("MAGNET_LAB_CACHE_DIR", Path("/d")) == Path("~/x").expanduser().resolve()
