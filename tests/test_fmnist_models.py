"""The shipped Fashion-MNIST models, the registry and safe checkpoint loading."""
from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from magnet_lab import data, paths, training
from magnet_lab.models.readers import load_checkpoint, save_checkpoint, sidecar_path
from magnet_lab.models.fmnist import (PIECEWISE_AFFINE_MODULES, FmnistClassifier, FmnistDCGAN)
from magnet_lab.registry import ARCHITECTURES, GENERATORS, load_classifier, load_generator

HAVE_FMNIST = data.fmnist_dir().is_dir()


@pytest.fixture(scope="module")
def generator():
    return load_generator("fmnist-dcgan")


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("fmnist")


# ------------------------------------------------------------------------- shipped artefacts
def test_shipped_artefacts_exist_and_are_small():
    for name in ("fmnist-dcgan", "fmnist-classifier"):
        for suffix in (".safetensors", ".json"):
            path = paths.data_dir() / f"{name}{suffix}"
            assert path.is_file(), path
            assert path.stat().st_size < 5e6


def test_generator_loads_in_eval_mode_with_sidecar(generator):
    assert isinstance(generator, FmnistDCGAN) and not generator.training
    assert not any(p.requires_grad for p in generator.parameters())
    assert generator.z_dim == generator.sidecar["kwargs"]["z_dim"]
    assert generator.sidecar["architecture"] == "FmnistDCGAN"
    assert sum(p.numel() for p in generator.parameters()) < 1.5e6


def test_generator_output_shape_range_and_finite(generator):
    z = torch.randn(64, generator.z_dim, generator=torch.Generator().manual_seed(0))
    x = generator(z)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert bool(torch.isfinite(x).all())
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert float(x.std()) > 0.1  # not a constant image
    assert float((x[0] - x[1]).abs().mean()) > 1e-3  # different latents, different images


def test_generator_is_piecewise_affine_layer_by_layer(generator):
    leaves = [m for m in generator.modules() if not list(m.children())]
    assert leaves, "no layers"
    for m in leaves:
        assert isinstance(m, PIECEWISE_AFFINE_MODULES), f"{type(m).__name__} is not piecewise affine"
        assert not isinstance(m, (nn.Tanh, nn.Sigmoid, nn.Dropout))
    assert isinstance(generator.net[-1], nn.Hardtanh)


def _jacobian(g, z):  # z [d] -> J [784, d]; forward mode: d = z_dim JVPs, cheap for d << 784
    return torch.func.jacfwd(lambda v: g(v[None]).flatten())(z)


def test_generator_jacobian_is_locally_constant_float64():
    g64 = load_generator("fmnist-dcgan", dtype=torch.float64)
    z = torch.randn(g64.z_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    d = 1e-6 * torch.randn(g64.z_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    J, J_near = _jacobian(g64, z), _jacobian(g64, z + d)  # same linear region: identical Jacobian
    assert float(J.abs().max()) > 1e-3
    assert float((J - J_near).abs().max()) < 1e-10 * float(J.abs().max())
    # and it is the map's derivative: a finite difference inside the region is exact (affine)
    fd = (g64((z + d)[None]) - g64(z[None])).flatten()  # [784]
    assert torch.allclose(fd, J @ d, rtol=0, atol=1e-9 * float((J @ d).abs().max()))
    # control: the same network with a smooth tanh output fails the check
    smooth = load_generator("fmnist-dcgan", dtype=torch.float64)
    smooth.net[-1] = nn.Tanh()
    S, S_near = _jacobian(smooth, z), _jacobian(smooth, z + d)
    assert float((S - S_near).abs().max()) > 1e-10 * float(S.abs().max())


def test_generator_works_under_vmap_and_jacfwd(generator):
    z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(torch.func.vmap(generator)(z), generator(z), atol=1e-6)  # [z_dim] -> [1, 28, 28]
    J = torch.func.vmap(torch.func.jacfwd(generator))(z)  # [3, 1, 28, 28, z_dim]
    assert J.shape == (3, 1, 28, 28, generator.z_dim)
    J1 = _jacobian(generator, z[1])  # [784, z_dim], unbatched path
    assert torch.allclose(J[1].reshape(784, -1), J1, atol=1e-6)
    assert float(J.abs().max()) > 0


def test_generator_rejects_bad_latents(generator):
    with pytest.raises(ValueError, match=r"\[B, %d\]" % generator.z_dim):
        generator(torch.zeros(2, generator.z_dim + 1))
    with pytest.raises(ValueError, match="non-finite"):
        generator(torch.full((2, generator.z_dim), float("nan")))
    with pytest.raises(TypeError, match="dtype"):
        generator(torch.zeros(2, generator.z_dim, dtype=torch.float64))


def test_generator_sidecar_records_split_and_class_distribution(generator):
    side = generator.sidecar
    split = side["data"]["class_frequencies"]
    assert side["data"]["imbalance"]["keep"] == list(data.DEFAULT_IMBALANCE.keep)
    assert side["data"]["class_counts"] == [6000, 6000, 600, 600, 600, 600, 600, 6000, 600, 600]
    assert split == pytest.approx([c / 22200 for c in side["data"]["class_counts"]], abs=1e-12)
    judged = side["final_metrics"]["class_frequencies_by_classifier"]
    assert judged["n_samples"] >= 10000 and sum(judged["generator"]) == pytest.approx(1.0)
    for key in ("seed", "steps", "training_time_s", "provenance"):
        assert key in side
    assert "torch" in side["provenance"]["versions"]


def test_generator_class_distribution_reproduces_from_sidecar(generator, classifier):
    judged = generator.sidecar["final_metrics"]["class_frequencies_by_classifier"]
    freq = training.generator_class_frequencies(generator, classifier, n=2000,
                                                seed=judged["sample_seed"])
    # the first 2000 of the recorded 10000 samples: same latents, so close to the record
    assert float((freq - torch.tensor(judged["generator"], dtype=torch.float64)).abs().max()) < 0.05


def test_classifier_loads_with_features(classifier):
    assert isinstance(classifier, FmnistClassifier) and not classifier.training
    x = torch.zeros(5, 1, 28, 28)
    assert classifier(x).shape == (5, 10)
    assert classifier.features(x).shape == (5, classifier.feature_dim)
    assert classifier.sidecar["final_metrics"]["test_accuracy"] >= 0.90
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        classifier(torch.zeros(5, 28, 28))


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST not installed "
                    "(sudo apt-get install dataset-fashion-mnist)")
def test_classifier_reproduces_recorded_subset_accuracy(classifier):
    rec = classifier.sidecar["final_metrics"]["test_subset"]
    acc = training.classifier_accuracy(classifier, "test", n=rec["first_n"])
    assert abs(acc - rec["accuracy"]) <= 1e-6
    assert acc >= 0.88


# --------------------------------------------------------------------------- checkpoint safety
def _tiny(tmp_path: Path, name: str = "tiny") -> tuple[Path, FmnistDCGAN]:
    torch.manual_seed(0)
    model = FmnistDCGAN(z_dim=4, channels=8).eval()
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(model, path, {"architecture": "FmnistDCGAN", "kwargs": model.config()})
    return path, model


def test_checkpoint_round_trip_via_registry(tmp_path):
    path, model = _tiny(tmp_path)
    loaded = load_generator(path)
    z = torch.randn(3, 4)
    assert torch.equal(loaded(z), model(z))
    assert "provenance" in loaded.sidecar
    g64 = load_generator(str(path), dtype=torch.float64)
    assert g64(z.double()).dtype == torch.float64


def test_corrupt_safetensors_is_value_error_naming_path(tmp_path):
    path, _ = _tiny(tmp_path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\x00" * 64)
    with pytest.raises(ValueError, match="not a valid safetensors") as info:
        load_generator(path)
    assert str(path) in str(info.value)


def test_empty_checkpoint_is_value_error(tmp_path):
    path, _ = _tiny(tmp_path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_checkpoint(path)


def _without_digest(path: Path) -> None:
    """Drop the sidecar's weights digest, as a user's hand-written sidecar has none (these tests
    rewrite the weights after save_checkpoint, which the digest would refuse first)."""
    side = json.loads(sidecar_path(path).read_text())
    side.pop("weights_sha256")
    sidecar_path(path).write_text(json.dumps(side))


def test_wrong_keys_are_named(tmp_path):
    path, model = _tiny(tmp_path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["net.99.weight"] = state.pop("net.0.weight")
    save_file(state, str(path))
    _without_digest(path)
    with pytest.raises(ValueError, match=r"missing keys \['net.0.weight'\].*unexpected keys "
                                         r"\['net.99.weight'\]"):
        load_generator(path)


def test_wrong_shapes_are_named(tmp_path):
    path, model = _tiny(tmp_path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # no metadata:
    side = json.loads(sidecar_path(path).read_text())  # the sidecar is the only description
    side["kwargs"]["z_dim"] = 5
    side.pop("weights_sha256")
    sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"net.0.weight: file \(392, 4\) vs model \(392, 5\)"):
        load_generator(path)


def test_nan_weights_are_refused(tmp_path):
    path, model = _tiny(tmp_path)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    state["net.4.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(path))
    _without_digest(path)
    with pytest.raises(ValueError, match=r"non-finite.*net.4.weight"):
        load_generator(path)
    with pytest.raises(ValueError, match="non-finite"):  # and never written in the first place
        bad = FmnistDCGAN(z_dim=4, channels=8)
        bad.net[0].weight.data[0, 0] = float("inf")
        save_checkpoint(bad, tmp_path / "bad.safetensors", {"architecture": "FmnistDCGAN",
                                                            "kwargs": bad.config()})


def test_missing_sidecar_is_file_not_found(tmp_path):
    path, _ = _tiny(tmp_path)
    sidecar_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        load_generator(path)


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_generator(tmp_path / "absent.safetensors")


def test_unknown_architecture_lists_known(tmp_path):
    path, model = _tiny(tmp_path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # no metadata
    sidecar_path(path).write_text(json.dumps({"architecture": "StyleGAN9", "kwargs": {}}))
    with pytest.raises(ValueError, match="unknown architecture 'StyleGAN9'.*FmnistDCGAN"):
        load_generator(path)


def test_unknown_builtin_name_lists_known():
    with pytest.raises(ValueError, match="fmnist-dcgan"):
        load_generator("biggan-deep-512")
    assert set(GENERATORS) >= {"fmnist-dcgan"} and "FmnistDCGAN" in ARCHITECTURES


def test_classifier_checkpoint_is_not_a_generator(tmp_path):
    model = FmnistClassifier()
    path = tmp_path / "clf.safetensors"
    save_checkpoint(model, path, {"architecture": "FmnistClassifier", "kwargs": model.config()})
    with pytest.raises(ValueError, match="not a generator"):
        load_generator(path)
    assert isinstance(load_classifier(path), FmnistClassifier)


def test_plain_pt_state_dict_loads_weights_only(tmp_path):
    path, model = _tiny(tmp_path)
    pt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), pt)
    sidecar_path(pt).write_text(sidecar_path(path).read_text())
    _without_digest(pt)  # the sidecar was written for the .safetensors file
    z = torch.randn(2, 4)
    assert torch.equal(load_generator(pt)(z), model(z))


class _Payload:
    """Unpickling this object opens (creates) a marker file: stands in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_pickled_object_in_pt_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    pt = tmp_path / "evil.pt"
    torch.save({"net.0.weight": torch.zeros(1), "x": _Payload(marker)}, pt)
    sidecar_path(pt).write_text(json.dumps({"architecture": "FmnistDCGAN", "kwargs": {}}))
    with pytest.raises(ValueError, match="refused to load") as info:
        load_generator(pt)
    assert str(pt) in str(info.value)
    assert not marker.exists()
    # the payload is live: a plain unpickler *would* run it (proves the test can fail)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control))).close()
    assert control.exists()
