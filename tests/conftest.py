"""Shared test setup: outputs go under a temporary folder, never into the repository."""
from __future__ import annotations

import os
import socket
import urllib.request

import pytest
import torch
from torch import nn

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


class _TinyNet(nn.Module):
    """A small random conv net with a ``features`` method, in float64 (stands in for the classifier)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(4 * 8 * 8, 6), nn.Dropout(0.5)).double()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def tiny_net() -> nn.Module:
    """A fresh seeded ``_TinyNet`` (float64, with dropout, so eval mode is observable)."""
    return _TinyNet()


def _uint8_images(n: int, seed: int, brightness: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 160, (n, 1, 28, 28), generator=g) + brightness).clamp(0, 255).to(torch.uint8)


@pytest.fixture
def uint8_images():
    """``uint8_images(n, seed, brightness)``: seeded random uint8 images [n, 1, 28, 28]."""
    return _uint8_images


@pytest.fixture
def no_network(monkeypatch):
    """Make every download route fail loudly for the duration of a test."""
    import torch_fidelity.feature_extractor_inceptionv3 as incep

    def boom(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr(incep, "load_state_dict_from_url", boom)
    monkeypatch.setattr(urllib.request, "urlopen", boom)
    monkeypatch.setattr(socket.socket, "connect", boom)
