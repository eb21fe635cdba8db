"""The shipped class-conditional BigGAN-deep (``fmnist-biggan``, issue 18 item 4): it loads as a
conditional generator with BigGAN's truncated latent law, its file is small and verified, and the
per-class record in its sidecar is what its weights give (recomputed here, not trusted)."""
from __future__ import annotations

import json

import pytest
import torch

import magnet_lab
from magnet_lab import attributes, class_quality, data, latent, paths
from magnet_lab.models.biggan import BigGANDeep

WEIGHTS = paths.data_dir() / "fmnist-biggan.safetensors"


@pytest.fixture(scope="module")
def sidecar() -> dict:
    return json.loads(WEIGHTS.with_suffix(".json").read_text())


def test_shipped_biggan_loads_as_a_conditional_generator_with_its_truncated_law(sidecar):
    assert WEIGHTS.stat().st_size < 20e6 and len(sidecar["weights_sha256"]) == 64
    G = magnet_lab.load_generator("fmnist-biggan")
    assert isinstance(G, BigGANDeep) and G.c_dim == len(data.CLASS_NAMES)
    spec = latent.spec_of(G)
    assert isinstance(spec.law, latent.TruncatedNormalLaw) and spec.law.bound == 2.0
    assert spec.n_classes == 10
    z = spec.draw(4, seed=0, classes=[3]).z
    x = G(z, G.one_hot([3] * 4))
    assert x.shape == (4, 1, 28, 28) and bool(torch.isfinite(x).all())


def test_sidecar_records_per_class_quality_with_cis_for_every_class(sidecar):
    q = sidecar["final_metrics"]["per_class_quality"]
    assert set(q["classes"]) == set(data.CLASS_NAMES)
    for name, row in q["classes"].items():
        assert row["n"] == q["n_per_class"], name
        for cell in [row["agreement"], *(row["metrics"][m] for m in ("precision", "recall", "fid"))]:
            assert cell["lo"] <= cell["hi"] and all(map(lambda v: v == v, cell.values())), name


def test_recorded_agreement_is_what_the_shipped_weights_give(sidecar):
    """Regenerate the recorded per-class images (same seed, law and count) and count the
    classifier's agreement with the requested class: equal to the record up to a few
    arg-max flips (thread order)."""
    q = sidecar["final_metrics"]["per_class_quality"]
    G = magnet_lab.load_generator("fmnist-biggan")
    C = magnet_lab.load_classifier("fmnist")
    classes = list(range(10))
    images, labels = class_quality.class_images(G, classes, q["n_per_class"],
                                                seed=q["sample_seed"])
    pred = attributes.predict_classes(C, images)  # [10 * n]
    for c in classes:
        got = float((pred[labels == c] == c).double().mean())
        want = q["classes"][data.CLASS_NAMES[c]]["agreement"]["value"]
        assert got == pytest.approx(want, abs=0.01), data.CLASS_NAMES[c]
