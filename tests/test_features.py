"""Feature extraction: uint8 and float images alike, input checks, and the standard extractors'
no-download, no-unpickling guarantees."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from magnet_lab import features, metrics

F64 = torch.float64


# --------------------------------------------------------------------------- our extractors

def test_extract_features_accepts_uint8_and_float_alike_and_checks_inputs(tiny_net, uint8_images):
    net = tiny_net
    u8 = uint8_images(10, seed=10, brightness=0)
    as_float = u8.to(F64) / 127.5 - 1.0
    f_u8, f_float = features.extract_features(net, u8), features.extract_features(net, as_float)
    assert f_u8.dtype == F64 and f_u8.shape == (10, 6)
    torch.testing.assert_close(f_u8, f_float, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        features.extract_features(net, as_float * 200)
    with pytest.raises(ValueError, match="N, C, H, W"):
        features.extract_features(net, as_float[0])
    with pytest.raises(ValueError, match="non-finite"):
        features.extract_features(lambda x: torch.full((x.shape[0], 3), float("nan")), as_float)


# --------------------------------------------------------------------------- standard extractors

@pytest.mark.parametrize("kind, file_name, env", [
    ("inception", "weights-inception-2015-12-05-6726825d.pth", "MAGNET_LAB_INCEPTION_WEIGHTS"),
    ("vgg16", "vgg16-397923af.pth", "MAGNET_LAB_VGG16_WEIGHTS"),
])
def test_standard_extractor_without_weights_raises_and_never_downloads(no_network, monkeypatch, tmp_path,
                                                                       kind, file_name, env):
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        features.standard_extractor(kind)
    assert file_name in str(err.value) and env in str(err.value) and "weights_path" in str(err.value)
    monkeypatch.setenv(env, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        features.standard_extractor(kind)


class _Tripwire:
    """Unpickling this object would run ``__setstate__``; weights_only loading must refuse it."""
    ran = False

    def __setstate__(self, state):
        type(self).ran = True


def test_standard_extractor_refuses_pickled_objects_without_running_them(no_network, tmp_path, output_dirs):
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": _Tripwire()}, path)
    with pytest.raises(ValueError, match="refused to load") as err:
        features.standard_extractor("inception", path)
    assert not _Tripwire.ran and "weights_only=False" not in str(err.value)
    torch.save({"not.a.layer": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not hold the weights"):
        features.standard_extractor("inception", path)


def test_standard_inception_from_local_file_runs_offline(no_network, monkeypatch, tmp_path, output_dirs,
                                                         uint8_images):
    import torch_fidelity.feature_extractor_inceptionv3 as incep

    with monkeypatch.context() as patch:  # random weights of the right architecture, no file needed
        patch.setattr(incep, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(incep.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        state = incep.FeatureExtractorInceptionV3("inception-v3-compat", ["64"]).state_dict()
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    monkeypatch.setenv("MAGNET_LAB_INCEPTION_WEIGHTS", str(path))
    ext = features.standard_extractor("inception", layer="64")
    assert ext.fidelity_name == "inception-v3-compat" and ext.weights_path == path
    real, fake = uint8_images(5, seed=11, brightness=0), uint8_images(4, seed=12, brightness=60)
    lib = metrics.fidelity_metrics(real, fake, ext, metrics=("fid", "precision", "recall"))
    feats = features.extract_features(ext, real), features.extract_features(ext, fake)
    assert feats[0].shape == (5, 64)  # Inception's first pooled block
    feat = metrics.metrics_from_features(*feats, metrics=("fid", "precision", "recall"))
    assert lib["precision"] == pytest.approx(feat["precision"])
    assert lib["recall"] == pytest.approx(feat["recall"])
    assert lib["fid"] == pytest.approx(feat["fid"], rel=1e-3)  # library works in float32
    assert not list((output_dirs / "cache").glob("fidelity-weights-*"))  # sanitised copies removed
    # the same weights as a safetensors file: read by content, same features, sanitised copy too
    st_path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st_path))
    ext_st = features.standard_extractor("inception", st_path, layer="64")
    assert torch.equal(features.extract_features(ext_st, real), feats[0])
    assert metrics.fidelity_metrics(real, fake, ext_st, metrics=("fid",))["fid"] == pytest.approx(lib["fid"])


def test_standard_extractor_and_real_reference_run_on_the_requested_device(tmp_path, monkeypatch):
    """The extractor's network is placed on ``device`` (so its features and the torch-fidelity
    metrics run there, ``cuda`` flag included), and the studies' real reference passes its
    device on; "meta" stands in for a GPU on this CPU machine."""
    from builders import random_inception_weights

    from magnet_lab.models import module_device_dtype
    from magnet_lab.studies import real_reference

    path = random_inception_weights(tmp_path / "inception.pth")
    assert module_device_dtype(features.standard_extractor("inception", path).net)[0].type == "cpu"
    ext = features.standard_extractor("inception", path, layer="64", device="meta")
    assert module_device_dtype(ext.net)[0].type == "meta"
    seen = {}

    def spy(kind, weights, *, layer=None, device=None):
        seen.update(kind=kind, device=device)
        raise RuntimeError("stop after the extractor")

    monkeypatch.setattr(features, "standard_extractor", spy)
    with pytest.raises(RuntimeError, match="stop after"):
        real_reference.real_reference("face", None, seed=0, real_images=tmp_path, device="meta")
    assert seen == {"kind": "inception", "device": "meta"}


def test_features_and_fidelity_metrics_run_without_tf32(tmp_path, monkeypatch):
    """Features are compared with the standard float32 numbers, so on CUDA TF32 is off while
    they are computed (torch allows TF32 convolutions by default) and the flags are restored
    after; the flags are plain attributes, so this is checked on the CPU."""
    from builders import random_inception_weights

    seen = []
    net = lambda x: seen.append(torch.backends.cudnn.allow_tf32) or x.flatten(1)[:, :3]  # noqa: E731
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    features.extract_features(net, torch.zeros(2, 1, 4, 4))
    ext = features.standard_extractor("inception", random_inception_weights(tmp_path / "w.pth"),
                                      layer="64")
    real = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    tf = features.torch_fidelity_api()
    calculate = tf.calculate_metrics

    def spy(**kwargs):
        seen.append(torch.backends.cudnn.allow_tf32)
        return calculate(**kwargs)

    monkeypatch.setattr(tf, "calculate_metrics", spy)
    metrics.fidelity_metrics(real, real.flip(0), ext, metrics=("fid",))
    assert seen == [False, False] and torch.backends.cudnn.allow_tf32 is True
