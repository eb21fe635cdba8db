"""Bank identities and cache paths are unchanged by the options refactor: golden values recorded
with the code before ``SpectraOptions`` (tests/golden_bank_identities.json) are reproduced
exactly, so every cached bank is still found."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from magnet_lab import bank
from magnet_lab.spectra import SpectraOptions

GOLDEN = json.loads((Path(__file__).with_name("golden_bank_identities.json")).read_text())
F32, F64 = torch.float32, torch.float64


def _latents(n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    return (torch.arange(n * d, dtype=F64).reshape(n, d) / 7 - 1).to(dtype)  # [n, d]


# name -> (latents, latent law, options); the old call passed the same values as keywords,
# non-applicable ones (proj_dim for exact, tol for projected, ...) included
CASES = {
    "exact_default": (_latents(6, 3, F32), {"law": "gaussian", "seed": 0}, SpectraOptions()),
    "exact_k_f64_speed": (_latents(6, 3, F32), {"law": "gaussian", "seed": 5},
                          SpectraOptions("exact", k=2, dtype=F64, proj_dim=9, seed=4, tol=0.1)),
    "projected": (_latents(5, 3, F64), {"law": "gaussian_per_row", "first_seed": 3},
                  SpectraOptions("projected", k=2, proj_dim=4, seed=7, tol=1e-3, max_iter=9)),
    "projected_bf16": (_latents(5, 3, F32), None,
                       SpectraOptions("projected", proj_dim=3, precision="bf16")),
    "topk": (_latents(4, 3, F32), {"law": "gaussian", "seed": 1},
             SpectraOptions("topk", k=2, seed=3, tol=1e-8, max_iter=20, oversample=4,
                            precision="tf32", proj_dim=64)),
    "topk_defaults": (_latents(4, 3, F64), None, SpectraOptions("topk", k=1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_identity_and_default_path_equal_the_recorded_golden_values(name):
    z, law, options = CASES[name]
    identity = bank.bank_identity(None, z, options, latent_law=law, fingerprint="fp-" + name)
    assert identity == GOLDEN[name]["identity"]
    assert bank.default_path(identity, "fmnist-dcgan", root="/r").name == GOLDEN[name]["path"]
    assert bank.default_path(identity, "/x/y/my model v2.pt", root="/r").name \
        == GOLDEN[name]["path2"]


def test_identity_of_a_module_fingerprints_its_weights_as_before():
    G = torch.nn.Linear(3, 5)
    with torch.no_grad():
        G.weight.copy_(torch.arange(15.).reshape(5, 3) / 10)
        G.bias.copy_(torch.arange(5.) / 3)
    identity = bank.bank_identity(G, _latents(6, 3, F32), SpectraOptions(),
                                  latent_law={"law": "gaussian", "seed": 0})
    assert identity == GOLDEN["module"]["identity"]
    assert bank.default_path(identity, "lin", root="/r").name == GOLDEN["module"]["path"]


def test_conditional_identity_adds_classes_and_labels_only_when_given():
    z, law, options = CASES["exact_default"]
    plain = bank.bank_identity(None, z, options, latent_law=law, fingerprint="fp")
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    cond = bank.bank_identity(None, z, options, latent_law=law, fingerprint="fp", n_classes=3,
                              labels=labels)
    assert "n_classes" not in plain and cond["n_classes"] == 3
    assert {k: v for k, v in cond.items() if k not in ("n_classes", "labels_sha256")} == plain
    other = bank.bank_identity(None, z, options, latent_law=law, fingerprint="fp", n_classes=3,
                               labels=labels.flip(0))
    assert "labels_sha256" in bank.identity_mismatch(cond, other)
    with pytest.raises(ValueError, match="needs labels"):
        bank.bank_identity(None, z, options, fingerprint="fp", n_classes=3)
    with pytest.raises(ValueError, match=r"\[0, n_classes=2\)"):
        bank.bank_identity(None, z, options, fingerprint="fp", n_classes=2, labels=labels)


def test_speed_options_and_method_irrelevant_fields_do_not_change_the_identity():
    z, law, _ = CASES["exact_default"]
    a = bank.bank_identity(None, z, SpectraOptions("exact", proj_dim=3, tol=0.5, seed=9),
                           fingerprint="fp")
    b = bank.bank_identity(None, z, SpectraOptions(), fingerprint="fp")
    assert a == b
    c = bank.bank_identity(None, z, SpectraOptions("projected", proj_dim=3), fingerprint="fp")
    assert bank.identity_mismatch(b, c) == "method differs: 'exact' vs 'projected'"
