"""Seeded fuzzing of every checkpoint reader: damaged files are refused with a named error, never
loaded as silent garbage.

For each format a small specimen is made by our own test code (an NVIDIA StyleGAN2 pickle, a
StyleGAN3 snapshot, a rosinality ``.pt``, the shipped ``fmnist-dcgan.safetensors`` with its
sidecar, a BigGAN-deep folder), then damaged in ``N_MUTATIONS`` seeded ways: truncated, bits
flipped, a run zeroed, random bytes inserted. Each damaged copy must either be refused by
``load_generator`` with a ValueError or FileNotFoundError that names the file, or load as a
generator whose images are finite. A file whose sidecar records its SHA-256 must always be
refused: any change to its bytes is a change of weights.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import magnet_lab
from magnet_lab import paths
from builders import (BIGGAN_TINY, ada_generator, ada_pickle, make_stylegan3, randomise_biggan,
                      rosinality_state, stylegan3_record, write_biggan_folder)
from magnet_lab.models.biggan import BigGANDeep

N_MUTATIONS = 24  # per format: 6 of each kind
KINDS = ("truncate", "flip", "zero", "insert")


def mutate(blob: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One seeded damage of ``blob``: cut at a random offset, 1-8 bits flipped, a run of 1-64
    bytes zeroed, or 1-64 random bytes inserted."""
    b = bytearray(blob)
    if kind == "truncate":
        return bytes(b[:int(rng.integers(1, len(b)))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, len(b)))
            b[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(b)
    i, n = int(rng.integers(0, len(b))), int(rng.integers(1, 65))
    if kind == "zero":
        b[i:i + n] = bytes(len(b[i:i + n]))
        return bytes(b)
    return bytes(b[:i]) + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + bytes(b[i:])


def _sg2(tmp: Path) -> tuple[Path, Path]:
    g, _ = ada_generator(tmp / "src_ran")
    return ada_pickle(tmp / "sg2.pkl", g), tmp / "sg2.pkl"


def _sg3(tmp: Path) -> tuple[Path, Path]:
    rec = stylegan3_record(make_stylegan3("T").float(), tmp / "src_ran", "T")
    return ada_pickle(tmp / "sg3.pkl", rec), tmp / "sg3.pkl"


def _rosinality(tmp: Path) -> tuple[Path, Path]:
    path = tmp / "550000.pt"
    torch.save({"g_ema": rosinality_state(), "latent_avg": torch.randn(8)}, path)
    return path, path


def _safetensors(tmp: Path) -> tuple[Path, Path]:
    for suffix in (".safetensors", ".json"):
        shutil.copy(paths.data_dir() / f"fmnist-dcgan{suffix}", tmp / f"g{suffix}")
    return tmp / "g.safetensors", tmp / "g.safetensors"


def _biggan(tmp: Path) -> tuple[Path, Path]:
    write_biggan_folder(randomise_biggan(BigGANDeep(**BIGGAN_TINY)), tmp / "biggan")
    return tmp / "biggan", tmp / "biggan" / "pytorch_model.bin"


SPECIMENS = {"nvidia-stylegan2": _sg2, "nvidia-stylegan3": _sg3, "rosinality": _rosinality,
             "safetensors+sidecar": _safetensors, "biggan-folder": _biggan}


def _images(G: torch.nn.Module) -> torch.Tensor:
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    if getattr(G, "c_dim", 0):
        return G(z, torch.eye(G.c_dim)[:2])
    return G(z)


@pytest.mark.parametrize("fmt", sorted(SPECIMENS))
def test_damaged_checkpoints_are_refused_by_name_or_load_finite(tmp_path, fmt, one_thread):
    load_path, target = SPECIMENS[fmt](tmp_path)
    assert torch.isfinite(_images(magnet_lab.load_generator(load_path))).all()  # the intact one
    original = target.read_bytes()
    rng = np.random.default_rng(sorted(SPECIMENS).index(fmt))
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(N_MUTATIONS):
        kind = KINDS[i % len(KINDS)]
        damaged = mutate(original, kind, rng)
        if damaged == original:
            continue
        target.write_bytes(damaged)
        try:
            G = magnet_lab.load_generator(load_path)
        except (ValueError, FileNotFoundError) as err:
            assert target.name in str(err) or load_path.name in str(err), (kind, str(err)[:300])
            outcomes["refused"] += 1
            continue
        assert fmt != "safetensors+sidecar", f"{kind}: a changed file with a recorded digest loaded"
        with torch.no_grad():
            assert torch.isfinite(_images(G)).all(), f"{fmt} {kind} #{i}: loaded with non-finite images"
        outcomes["loaded"] += 1
    assert outcomes["refused"] >= N_MUTATIONS // 2, outcomes  # most damage is caught by name
