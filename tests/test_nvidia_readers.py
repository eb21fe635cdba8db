"""StyleGAN2 readers: NVIDIA ADA / stylegan3-repository / TensorFlow pickles and rosinality .pt.

Every file here is built by tests/builders.py in the published structure (no NVIDIA code or
weights); embedded sources carry a payload that would create a marker file if ever executed.
"""
from __future__ import annotations

import argparse
import json
import pickle
import subprocess

import numpy as np
import pytest
import torch

from magnet_lab.models.readers import (identify, nvidia_pickle, pickle_file, read_state_dict,
                                       read_stylegan2, save_checkpoint)
from builders import (ADA_CONFIG, FILTER, RESNET_SHAPES, SKIP_SHAPES, TINY, Network, PersistentNet,
                      ada_generator, ada_pickle, nvidia_dumps, rosinality_state, tf_pickle)
from payloads import payload

# ----------------------------------------------------------------------- ADA / stylegan3-repo pickles

@pytest.mark.parametrize("protocol", [3, 4])
def test_ada_pickle_round_trips_keys_shapes_and_values(tmp_path, protocol):
    marker = tmp_path / "module_src_ran"
    g, expected = ada_generator(marker)
    path = ada_pickle(tmp_path / "network-snapshot.pkl", g, protocol)
    assert identify(path) is nvidia_pickle
    state, config = read_stylegan2(path)
    assert {k: tuple(v.shape) for k, v in state.items()} == SKIP_SHAPES
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert torch.equal(state["synthesis.b8.conv0.resample_filter"], FILTER)
    assert config == ADA_CONFIG and json.loads(json.dumps(config)) == config
    assert not marker.exists()  # module_src was never executed


def test_stylegan3_repo_flat_kwargs_are_nested_with_that_repos_defaults(tmp_path):
    marker = tmp_path / "module_src_ran"
    g, expected = ada_generator(marker, flat=True)
    state, config = read_stylegan2(ada_pickle(tmp_path / "sg2-from-sg3-repo.pkl", g))
    assert set(state) == set(SKIP_SHAPES)
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    want = {**ADA_CONFIG, "mapping_kwargs": {**ADA_CONFIG["mapping_kwargs"], "w_avg_beta": 0.998},
            "synthesis_kwargs": {**ADA_CONFIG["synthesis_kwargs"], "num_fp16_res": 4, "conv_clamp": 256}}
    assert config == want  # fused_modconv_default and freeze_layers (training only) are dropped
    assert not marker.exists()


def test_resnet_generator_reads_skip_weights_and_torgb_only_at_the_end(tmp_path):
    g, expected = ada_generator(tmp_path / "ran", architecture="resnet")
    state, config = read_stylegan2(ada_pickle(tmp_path / "resnet.pkl", g))
    assert {k: tuple(v.shape) for k, v in state.items()} == RESNET_SHAPES
    assert torch.equal(state["synthesis.b8.skip.weight"], expected["synthesis.b8.skip.weight"])
    assert config["synthesis_kwargs"]["architecture"] == "resnet"


def test_nvidia_pickle_is_also_a_registry_reader_for_read_state_dict(tmp_path):
    g, expected = ada_generator(tmp_path / "ran")
    path = ada_pickle(tmp_path / "g.pkl", g)
    state = read_state_dict(path)
    assert set(state) == set(SKIP_SHAPES)
    assert torch.equal(state["mapping.w_avg"], expected["mapping.w_avg"])
    plain = tmp_path / "plain.pkl"  # every other pickle is still refused unopened
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert identify(plain) is pickle_file


def test_config_that_disagrees_with_tensor_shapes_is_refused(tmp_path):
    g, _ = ada_generator(tmp_path / "ran")
    g.meta["state"]["_init_kwargs"]["synthesis_kwargs"]["channel_base"] = 128
    with pytest.raises(ValueError, match="do not match the StyleGAN2 configuration") as err:
        read_stylegan2(ada_pickle(tmp_path / "g.pkl", g))
    assert str(tmp_path / "g.pkl") in str(err.value)


@pytest.mark.parametrize("class_name, src", [
    ("Generator", "class SynthesisInput(torch.nn.Module):\n    pass\n"),  # as NVIDIA stores it
    ("training.networks_stylegan3.Generator", ""),
])
def test_stylegan3_generator_is_refused_by_class_or_source_text(tmp_path, class_name, src):
    marker = tmp_path / "ran"
    g = PersistentNet(class_name, marker, init_kwargs=dict(TINY), src=src)
    with pytest.raises(ValueError, match="StyleGAN3 generator.*read it with read_stylegan3") as err:
        read_stylegan2(ada_pickle(tmp_path / "sg3.pkl", g))
    assert str(tmp_path / "sg3.pkl") in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_stylegan3_generator_is_refused_by_its_layer_keys(tmp_path):
    marker = tmp_path / "ran"
    affine = PersistentNet("FullyConnectedLayer", marker, params={"weight": torch.zeros(4, 8)})
    layer = PersistentNet("SynthesisLayer", marker, modules={"affine": affine})
    syn = PersistentNet("SynthesisNetwork", marker, modules={"L0_36_512": layer})
    g = PersistentNet("Generator", marker, modules={"synthesis": syn}, init_kwargs=dict(TINY))
    with pytest.raises(ValueError, match=r"StyleGAN3 generator \(layer synthesis\.L0_36_512"):
        read_stylegan2(ada_pickle(tmp_path / "sg3.pkl", g))


# ----------------------------------------------------------------------- TensorFlow pickles

@pytest.mark.parametrize("protocol", [2, 3])
def test_tensorflow_pickle_converts_with_the_documented_transposes_and_flips(tmp_path, protocol):
    marker = tmp_path / "build_module_src_ran"
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    tf = tf_pickle(path, marker, protocol)
    state, config = read_stylegan2(path)
    assert {k: tuple(t.shape) for k, t in state.items()} == SKIP_SHAPES
    assert config == ADA_CONFIG  # fmap_base 32 -> channel_base 64
    s = {k: t.numpy() for k, t in state.items()}
    assert np.array_equal(s["mapping.w_avg"], tf["dlatent_avg"])
    for i in range(2):
        assert np.array_equal(s[f"mapping.fc{i}.weight"], tf[f"mapping/Dense{i}/weight"].T)
        assert np.array_equal(s[f"mapping.fc{i}.bias"], tf[f"mapping/Dense{i}/bias"])
    assert np.array_equal(s["synthesis.b4.const"], tf["synthesis/4x4/Const/const"][0])
    for ours, theirs, flipped in (("b4.conv1", "4x4/Conv", False), ("b8.conv0", "8x8/Conv0_up", True),
                                  ("b8.conv1", "8x8/Conv1", False), ("b4.torgb", "4x4/ToRGB", False),
                                  ("b8.torgb", "8x8/ToRGB", False)):
        w_ours, w_tf = s[f"synthesis.{ours}.weight"], tf[f"synthesis/{theirs}/weight"]
        k = w_tf.shape[0]
        for o, i, a, b in np.ndindex(*w_ours.shape):  # [out, in, k, k] from [k, k, in, out]
            ta, tb = (k - 1 - a, k - 1 - b) if flipped else (a, b)
            assert w_ours[o, i, a, b] == w_tf[ta, tb, i, o], (ours, o, i, a, b)
        assert np.array_equal(s[f"synthesis.{ours}.affine.weight"], tf[f"synthesis/{theirs}/mod_weight"].T)
        assert np.array_equal(s[f"synthesis.{ours}.affine.bias"], tf[f"synthesis/{theirs}/mod_bias"] + 1)
        assert np.array_equal(s[f"synthesis.{ours}.bias"], tf[f"synthesis/{theirs}/bias"])
        if "conv" in ours:
            assert s[f"synthesis.{ours}.noise_strength"] == tf[f"synthesis/{theirs}/noise_strength"]
    for ours, j in (("b4.conv1", 0), ("b8.conv0", 1), ("b8.conv1", 2)):
        assert np.array_equal(s[f"synthesis.{ours}.noise_const"], tf[f"synthesis/noise{j}"][0, 0])
    assert np.array_equal(s["synthesis.b8.resample_filter"], FILTER.numpy())
    assert not marker.exists()


# ----------------------------------------------------------------------- rosinality .pt

def test_rosinality_checkpoint_maps_to_our_keys(tmp_path):
    g = rosinality_state()
    latent_avg = torch.randn(8)
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": g, "latent_avg": latent_avg, "args": argparse.Namespace(size=8)}, path)
    state, config = read_stylegan2(path)
    assert {k: tuple(t.shape) for k, t in state.items()} == SKIP_SHAPES
    assert config == ADA_CONFIG
    pairs = {"mapping.fc0.weight": "style.1.weight", "mapping.fc1.bias": "style.2.bias",
             "synthesis.b4.conv1.weight": "conv1.conv.weight",
             "synthesis.b4.conv1.affine.weight": "conv1.conv.modulation.weight",
             "synthesis.b4.conv1.affine.bias": "conv1.conv.modulation.bias",
             "synthesis.b4.conv1.noise_strength": "conv1.noise.weight",
             "synthesis.b4.conv1.bias": "conv1.activate.bias",
             "synthesis.b8.conv0.weight": "convs.0.conv.weight",
             "synthesis.b8.conv1.affine.weight": "convs.1.conv.modulation.weight",
             "synthesis.b4.torgb.weight": "to_rgb1.conv.weight", "synthesis.b4.torgb.bias": "to_rgb1.bias",
             "synthesis.b8.torgb.affine.bias": "to_rgbs.0.conv.modulation.bias",
             "synthesis.b4.const": "input.input", "synthesis.b4.conv1.noise_const": "noises.noise_0",
             "synthesis.b8.conv0.noise_const": "noises.noise_1",
             "synthesis.b8.conv1.noise_const": "noises.noise_2"}
    for ours, theirs in pairs.items():
        assert torch.equal(state[ours].flatten(), g[theirs].flatten()), ours
    assert torch.equal(state["mapping.w_avg"], latent_avg)
    assert torch.equal(state["synthesis.b8.conv0.resample_filter"], FILTER)


def test_rosinality_training_checkpoint_without_latent_avg_warns_and_zeros_w_avg(tmp_path):
    path = tmp_path / "010000.pt"
    torch.save({"g_ema": rosinality_state(), "g": rosinality_state(1)}, path)
    with pytest.warns(UserWarning, match="no latent_avg.*zeros"):
        state, _ = read_stylegan2(path)
    assert torch.equal(state["mapping.w_avg"], torch.zeros(8))


def test_torch_file_without_g_ema_is_not_a_stylegan2_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a rosinality checkpoint") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value)


def test_safetensors_file_holds_no_stylegan2_configuration(tmp_path):
    from magnet_lab.models.fmnist import FmnistDCGAN
    model = FmnistDCGAN(z_dim=4, channels=8)
    path = save_checkpoint(model, tmp_path / "g.safetensors",
                           {"architecture": "FmnistDCGAN", "kwargs": model.config()})
    with pytest.raises(ValueError, match="holds no StyleGAN2 generator configuration"):
        read_stylegan2(path)


# ----------------------------------------------------------------------- malicious and damaged files

_payload = payload


KINDS = ["posix.system", "builtins.eval", "builtins.exec", "builtins.getattr", "subprocess.Popen"]


@pytest.mark.parametrize("kind", KINDS)
def test_payloads_are_live_under_a_plain_unpickler(tmp_path, kind):
    """The control: unpickled naively, each payload does create its marker."""
    marker = tmp_path / "ran"
    obj = pickle.loads(pickle.dumps(_payload(kind, marker)[0], protocol=2))
    if isinstance(obj, subprocess.Popen):
        obj.wait()
    assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["top", "inside_g_ema_state", "inside_tf_network"])
def test_malicious_pickle_is_refused_naming_the_global_and_never_runs(tmp_path, kind, where):
    marker = tmp_path / "pwned"
    payload, name = _payload(kind, marker)
    path = tmp_path / "evil.pkl"
    if where == "top":
        path.write_bytes(nvidia_dumps({"G_ema": payload}, 4))
    elif where == "inside_g_ema_state":
        g, _ = ada_generator(tmp_path / "src_ran")
        g.meta["state"]["_modules"]["mapping"].meta["state"]["lr_multiplier"] = payload
        ada_pickle(path, g)
    else:
        path.write_bytes(nvidia_dumps(Network({"version": 4, "variables": [("x", payload)]}), 2))
    with pytest.raises(ValueError) as err:
        read_stylegan2(path)
    msg = str(err.value)
    assert f"global {name}," in msg and "refused" in msg and str(path) in msg, msg
    assert "\n" not in msg and "nothing in the file was executed" in msg
    with pytest.raises(ValueError, match="refused") as err:  # registry door: refused either way
        read_state_dict(path)
    assert str(path) in str(err.value)
    assert not marker.exists() and not (tmp_path / "src_ran").exists()


def test_hand_written_os_system_global_is_refused_by_that_name(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"  # text opcodes: {"G_ema": os.system("touch marker")}
    path.write_bytes(b"\x80\x02(dp0\nVG_ema\np1\ncos\nsystem\np2\n(V" + f"touch {marker}".encode()
                     + b"\np3\ntp4\nRp5\ns.")
    with pytest.raises(ValueError, match=r"the global os\.system, which is not on the allow-list"):
        read_stylegan2(path)
    assert not marker.exists()


@pytest.mark.parametrize("field, value", [("_init_kwargs", 5), ("_init_args", 3),
                                          ("_parameters", "x"), ("_non_persistent_buffers_set", 7)])
def test_malformed_generator_state_gives_a_named_error(tmp_path, field, value):
    g, _ = ada_generator(tmp_path / "ran")
    g.meta["state"][field] = value
    path = ada_pickle(tmp_path / "g.pkl", g)
    if field == "_non_persistent_buffers_set":  # ignored when not a set: the file still reads
        assert set(read_stylegan2(path)[0]) == set(SKIP_SHAPES)
        return
    with pytest.raises(ValueError) as err:
        read_stylegan2(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_malformed_rosinality_tensor_gives_a_named_error(tmp_path):
    g = rosinality_state()
    g["noises.noise_1"] = torch.zeros(3)  # wrong rank
    path = tmp_path / "r.pt"
    torch.save({"g_ema": g, "latent_avg": torch.zeros(8)}, path)
    with pytest.raises(ValueError, match="malformed rosinality checkpoint") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value)


def test_pickle_that_sets_attributes_on_a_stand_in_class_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"  # EasyDict (an allowed global) then BUILD (None, {"x": 1}):
    path.write_bytes(b"\x80\x02cdnnlib.util\nEasyDict\nN}X\x01\x00\x00\x00xK\x01s\x86b.")  # setattr
    with pytest.raises(ValueError, match="is a class or function, and the pickle tries to set"):
        read_stylegan2(path)
    assert not hasattr(nvidia_pickle.ALLOWED_GLOBALS["dnnlib.util.EasyDict"], "x")


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, -1])
def test_truncated_nvidia_pickle_gives_a_named_error(tmp_path, cut):
    g, _ = ada_generator(tmp_path / "ran")
    path = ada_pickle(tmp_path / "g.pkl", g)
    blob = path.read_bytes()
    path.write_bytes(blob[: (len(blob) - 1 if cut == -1 else int(len(blob) * cut))])
    with pytest.raises(ValueError, match="corrupt or truncated pickle") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_nvidia_pickle_gives_a_named_error(tmp_path):
    g, _ = ada_generator(tmp_path / "ran")
    path = ada_pickle(tmp_path / "g.pkl", g)
    path.write_bytes(path.read_bytes()[:-8] + b"\xff" * 8)  # invalid opcodes where STOP was
    with pytest.raises(ValueError, match="corrupt or truncated pickle") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value)


def test_truncated_rosinality_file_gives_a_named_error(tmp_path):
    path = tmp_path / "r.pt"
    torch.save({"g_ema": rosinality_state(), "latent_avg": torch.zeros(8)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt or truncated torch file") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value)


def test_malicious_rosinality_file_is_refused_naming_the_global(tmp_path):
    marker = tmp_path / "pwned"
    payload, name = _payload("posix.system", marker)
    path = tmp_path / "r.pt"
    torch.save({"g_ema": rosinality_state(), "latent_avg": payload}, path)
    with pytest.raises(ValueError, match=f"disallowed global {name}"):
        read_stylegan2(path)
    assert not marker.exists()
