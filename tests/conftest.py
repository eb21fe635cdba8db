"""Shared test setup: outputs go under a temporary folder, never into the repository."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MAGNET_LAB_PROGRESS", "0")  # no progress bars in test logs
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def output_dirs(tmp_path_factory):
    """Point figures/reports/cache at a session temp dir (inherited by papermill kernels)."""
    base = tmp_path_factory.mktemp("magnet_lab_outputs")
    saved = {k: os.environ.get(k) for k in
             ("MAGNET_LAB_FIGURES_DIR", "MAGNET_LAB_REPORTS_DIR", "MAGNET_LAB_CACHE_DIR")}
    os.environ["MAGNET_LAB_FIGURES_DIR"] = str(base / "figures")
    os.environ["MAGNET_LAB_REPORTS_DIR"] = str(base / "reports")
    os.environ["MAGNET_LAB_CACHE_DIR"] = str(base / "cache")
    yield base
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention on a shared 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
