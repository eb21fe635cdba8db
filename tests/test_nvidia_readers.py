"""StyleGAN2 readers: NVIDIA ADA / stylegan3-repository / TensorFlow pickles and rosinality .pt.

Every file here is built by our own test code in the published structure (no NVIDIA code or
weights): persistence objects are pickled as calls of a stand-in registered under
``torch_utils.persistence._reconstruct_persistent_obj``, TF networks as a stand-in
``dnnlib.tflib.network.Network``. Embedded sources carry a payload that would create a marker
file if it were ever executed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from magnet_lab.models.readers import (identify, nvidia_pickle, pickle_file, read_state_dict,
                                       read_stylegan2, save_checkpoint)
from payloads import payload

# ----------------------------------------------------------------------- stand-ins for NVIDIA's names


def _reconstruct_persistent_obj(meta):  # pickled by name only; a reader must never call ours
    raise AssertionError("stand-in called")


class EasyDict(dict):
    pass


class Network:
    def __init__(self, state: dict) -> None:
        self._state = state

    def __getstate__(self) -> dict:
        return self._state


@contextlib.contextmanager
def _nvidia_names():
    """Register our stand-ins under NVIDIA's module names while pickling, then remove them."""
    fakes = {"torch_utils": types.ModuleType("torch_utils"),
             "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
             "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": types.ModuleType("dnnlib.util"),
             "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
             "dnnlib.tflib.network": types.ModuleType("dnnlib.tflib.network")}
    for obj, mod in ((_reconstruct_persistent_obj, "torch_utils.persistence"),
                     (EasyDict, "dnnlib.util"), (Network, "dnnlib.tflib.network")):
        obj.__module__, obj.__qualname__ = mod, obj.__name__
        setattr(fakes[mod], obj.__name__, obj)
    assert not set(fakes) & set(sys.modules)
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name in fakes:
            del sys.modules[name]
        for obj in (_reconstruct_persistent_obj, EasyDict, Network):
            obj.__module__, obj.__qualname__ = __name__, obj.__name__


def _dumps(obj: Any, protocol: int) -> bytes:
    with _nvidia_names():
        return pickle.dumps(obj, protocol=protocol)


def _evil_src(marker: Path) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"


class _Net:
    """A persistence object as NVIDIA pickles it: ``_reconstruct_persistent_obj(meta)``, with the
    bare class name and the defining module's source text (here: a payload plus ``src``)."""

    def __init__(self, class_name: str, marker: Path, params=None, buffers=None, modules=None,
                 init_kwargs=None, src: str = "") -> None:
        state = {"training": False,
                 "_parameters": OrderedDict((k, torch.nn.Parameter(v)) for k, v in (params or {}).items()),
                 "_buffers": OrderedDict(buffers or {}), "_non_persistent_buffers_set": set(),
                 "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(),
                 "_modules": OrderedDict(modules or {}),
                 "_init_args": (), "_init_kwargs": init_kwargs or {},
                 "act_gain": np.float64(np.sqrt(2))}  # numpy scalars, as NVIDIA's layers store
        self.meta = {"type": "class", "version": 4, "module_src": _evil_src(marker) + src,
                     "class_name": class_name, "state": state}

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


# ----------------------------------------------------------------------- a tiny G in every format

TINY = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3)
CHANNELS = {4: 16, 8: 8}  # channel_base 64, channel_max 16
FILTER = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64
SKIP_SHAPES = {
    "mapping.fc0.weight": (8, 8), "mapping.fc0.bias": (8,), "mapping.fc1.weight": (8, 8),
    "mapping.fc1.bias": (8,), "mapping.w_avg": (8,),
    "synthesis.b4.const": (16, 4, 4), "synthesis.b4.resample_filter": (4, 4),
    "synthesis.b4.conv1.weight": (16, 16, 3, 3), "synthesis.b4.conv1.bias": (16,),
    "synthesis.b4.conv1.affine.weight": (16, 8), "synthesis.b4.conv1.affine.bias": (16,),
    "synthesis.b4.conv1.noise_const": (4, 4), "synthesis.b4.conv1.noise_strength": (),
    "synthesis.b4.conv1.resample_filter": (4, 4),
    "synthesis.b4.torgb.weight": (3, 16, 1, 1), "synthesis.b4.torgb.bias": (3,),
    "synthesis.b4.torgb.affine.weight": (16, 8), "synthesis.b4.torgb.affine.bias": (16,),
    "synthesis.b8.resample_filter": (4, 4),
    "synthesis.b8.conv0.weight": (8, 16, 3, 3), "synthesis.b8.conv0.bias": (8,),
    "synthesis.b8.conv0.affine.weight": (16, 8), "synthesis.b8.conv0.affine.bias": (16,),
    "synthesis.b8.conv0.noise_const": (8, 8), "synthesis.b8.conv0.noise_strength": (),
    "synthesis.b8.conv0.resample_filter": (4, 4),
    "synthesis.b8.conv1.weight": (8, 8, 3, 3), "synthesis.b8.conv1.bias": (8,),
    "synthesis.b8.conv1.affine.weight": (8, 8), "synthesis.b8.conv1.affine.bias": (8,),
    "synthesis.b8.conv1.noise_const": (8, 8), "synthesis.b8.conv1.noise_strength": (),
    "synthesis.b8.conv1.resample_filter": (4, 4),
    "synthesis.b8.torgb.weight": (3, 8, 1, 1), "synthesis.b8.torgb.bias": (3,),
    "synthesis.b8.torgb.affine.weight": (8, 8), "synthesis.b8.torgb.affine.bias": (8,),
}
RESNET_SHAPES = {**{k: v for k, v in SKIP_SHAPES.items() if not k.startswith("synthesis.b4.torgb")},
                 "synthesis.b8.skip.weight": (8, 16, 1, 1), "synthesis.b8.skip.resample_filter": (4, 4)}
ADA_CONFIG = {**TINY,
              "mapping_kwargs": {"num_layers": 2, "embed_features": 0, "layer_features": 8,
                                 "activation": "lrelu", "lr_multiplier": 0.01, "w_avg_beta": 0.995},
              "synthesis_kwargs": {"channel_base": 64, "channel_max": 16, "num_fp16_res": 0,
                                   "conv_clamp": None, "architecture": "skip",
                                   "resample_filter": [1, 3, 3, 1], "use_noise": True,
                                   "activation": "lrelu", "fp16_channels_last": False}}


def _ada_generator(marker: Path, *, flat: bool = False, architecture: str = "skip",
                   seed: int = 0) -> tuple[_Net, dict[str, torch.Tensor]]:
    """G_ema of the tiny config as the ADA repo (``flat=False``) or the stylegan3 repo's
    networks_stylegan2 (``flat=True``) pickles it, and the state dict it must read back as."""
    gen = torch.Generator().manual_seed(seed)
    # the stylegan3 repo's networks_stylegan2 source mentions fused_modconv_default; ADA's does not
    src = "# SynthesisBlock(..., fused_modconv_default=True)\n" if flat else ""
    expected: dict[str, torch.Tensor] = {}

    def rand(key: str, *shape: int) -> torch.Tensor:
        expected[key] = torch.randn(shape, generator=gen)
        return expected[key].clone()

    def filt(key: str) -> torch.Tensor:
        expected[key] = FILTER.clone()
        return FILTER.clone()

    def net(cls: str, prefix: str, params=(), buffers=(), modules=None, init_kwargs=None) -> _Net:
        return _Net(cls, marker,
                    params={k: rand(prefix + k, *s) for k, s in params},
                    buffers={k: (filt(prefix + k) if k == "resample_filter" else rand(prefix + k, *s))
                             for k, s in buffers},
                    modules=modules, init_kwargs=init_kwargs, src=src)

    def fc(prefix: str, fin: int, fout: int) -> _Net:
        return net("FullyConnectedLayer", prefix, [("weight", (fout, fin)), ("bias", (fout,))])

    def layer(prefix: str, cin: int, cout: int, res: int) -> _Net:
        return net("SynthesisLayer", prefix,
                   [("weight", (cout, cin, 3, 3)), ("noise_strength", ()), ("bias", (cout,))],
                   [("resample_filter", None), ("noise_const", (res, res))],
                   {"affine": fc(prefix + "affine.", 8, cin)})

    def torgb(prefix: str, cin: int) -> _Net:
        return net("ToRGBLayer", prefix, [("weight", (3, cin, 1, 1)), ("bias", (3,))],
                   modules={"affine": fc(prefix + "affine.", 8, cin)})

    b4 = {"conv1": layer("synthesis.b4.conv1.", 16, 16, 4)}
    if architecture == "skip":
        b4["torgb"] = torgb("synthesis.b4.torgb.", 16)
    b8 = {"conv0": layer("synthesis.b8.conv0.", 16, 8, 8), "conv1": layer("synthesis.b8.conv1.", 8, 8, 8),
          "torgb": torgb("synthesis.b8.torgb.", 8)}
    if architecture == "resnet":
        b8["skip"] = net("Conv2dLayer", "synthesis.b8.skip.", [("weight", (8, 16, 1, 1))],
                         [("resample_filter", None)])
    synthesis = net("SynthesisNetwork", "synthesis.", modules={
        "b4": net("SynthesisBlock", "synthesis.b4.", [("const", (16, 4, 4))],
                  [("resample_filter", None)], b4),
        "b8": net("SynthesisBlock", "synthesis.b8.", buffers=[("resample_filter", None)], modules=b8)})
    mapping = net("MappingNetwork", "mapping.", buffers=[("w_avg", (8,))],
                  modules={"fc0": fc("mapping.fc0.", 8, 8), "fc1": fc("mapping.fc1.", 8, 8)})
    syn_kwargs = EasyDict(channel_base=64, channel_max=16, architecture=architecture)
    if flat:  # stylegan3 repo: synthesis kwargs at top level, plus a runtime-only option
        init = dict(TINY, mapping_kwargs=EasyDict(num_layers=2, freeze_layers=0),
                    fused_modconv_default="inference_only", **syn_kwargs)
    else:
        init = dict(TINY, mapping_kwargs=EasyDict(num_layers=2), synthesis_kwargs=syn_kwargs)
    g = net("Generator", "", modules={"synthesis": synthesis, "mapping": mapping}, init_kwargs=init)
    return g, expected


def _ada_pickle(path: Path, g: _Net, protocol: int = 4) -> Path:
    marker = path.parent / "src_ran"
    d = _Net("Discriminator", marker)
    aug = _Net("AugmentPipe", marker, buffers={"p": torch.zeros([])})
    data = {"G": g, "D": d, "G_ema": g, "augment_pipe": aug,
            "training_set_kwargs": EasyDict(path="ffhq.zip", resolution=8, max_size=np.int64(70000))}
    path.write_bytes(_dumps(data, protocol))
    return path


# ----------------------------------------------------------------------- ADA / stylegan3-repo pickles

@pytest.mark.parametrize("protocol", [3, 4])
def test_ada_pickle_round_trips_keys_shapes_and_values(tmp_path, protocol):
    marker = tmp_path / "module_src_ran"
    g, expected = _ada_generator(marker)
    path = _ada_pickle(tmp_path / "network-snapshot.pkl", g, protocol)
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
    g, expected = _ada_generator(marker, flat=True)
    state, config = read_stylegan2(_ada_pickle(tmp_path / "sg2-from-sg3-repo.pkl", g))
    assert set(state) == set(SKIP_SHAPES)
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    want = {**ADA_CONFIG, "mapping_kwargs": {**ADA_CONFIG["mapping_kwargs"], "w_avg_beta": 0.998},
            "synthesis_kwargs": {**ADA_CONFIG["synthesis_kwargs"], "num_fp16_res": 4, "conv_clamp": 256}}
    assert config == want  # fused_modconv_default and freeze_layers (training only) are dropped
    assert not marker.exists()


def test_resnet_generator_reads_skip_weights_and_torgb_only_at_the_end(tmp_path):
    g, expected = _ada_generator(tmp_path / "ran", architecture="resnet")
    state, config = read_stylegan2(_ada_pickle(tmp_path / "resnet.pkl", g))
    assert {k: tuple(v.shape) for k, v in state.items()} == RESNET_SHAPES
    assert torch.equal(state["synthesis.b8.skip.weight"], expected["synthesis.b8.skip.weight"])
    assert config["synthesis_kwargs"]["architecture"] == "resnet"


def test_nvidia_pickle_is_also_a_registry_reader_for_read_state_dict(tmp_path):
    g, expected = _ada_generator(tmp_path / "ran")
    path = _ada_pickle(tmp_path / "g.pkl", g)
    state = read_state_dict(path)
    assert set(state) == set(SKIP_SHAPES)
    assert torch.equal(state["mapping.w_avg"], expected["mapping.w_avg"])
    plain = tmp_path / "plain.pkl"  # every other pickle is still refused unopened
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert identify(plain) is pickle_file


def test_config_that_disagrees_with_tensor_shapes_is_refused(tmp_path):
    g, _ = _ada_generator(tmp_path / "ran")
    g.meta["state"]["_init_kwargs"]["synthesis_kwargs"]["channel_base"] = 128
    with pytest.raises(ValueError, match="do not match the StyleGAN2 configuration") as err:
        read_stylegan2(_ada_pickle(tmp_path / "g.pkl", g))
    assert str(tmp_path / "g.pkl") in str(err.value)


@pytest.mark.parametrize("class_name, src", [
    ("Generator", "class SynthesisInput(torch.nn.Module):\n    pass\n"),  # as NVIDIA stores it
    ("training.networks_stylegan3.Generator", ""),
])
def test_stylegan3_generator_is_refused_by_class_or_source_text(tmp_path, class_name, src):
    marker = tmp_path / "ran"
    g = _Net(class_name, marker, init_kwargs=dict(TINY), src=src)
    with pytest.raises(ValueError, match="StyleGAN3 generator.*read it with read_stylegan3") as err:
        read_stylegan2(_ada_pickle(tmp_path / "sg3.pkl", g))
    assert str(tmp_path / "sg3.pkl") in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_stylegan3_generator_is_refused_by_its_layer_keys(tmp_path):
    marker = tmp_path / "ran"
    affine = _Net("FullyConnectedLayer", marker, params={"weight": torch.zeros(4, 8)})
    layer = _Net("SynthesisLayer", marker, modules={"affine": affine})
    syn = _Net("SynthesisNetwork", marker, modules={"L0_36_512": layer})
    g = _Net("Generator", marker, modules={"synthesis": syn}, init_kwargs=dict(TINY))
    with pytest.raises(ValueError, match=r"StyleGAN3 generator \(layer synthesis\.L0_36_512"):
        read_stylegan2(_ada_pickle(tmp_path / "sg3.pkl", g))


# ----------------------------------------------------------------------- TensorFlow pickles

def _tf_pickle(path: Path, marker: Path, protocol: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    v: dict[str, np.ndarray] = {}

    def var(name: str, *shape: int) -> tuple[str, np.ndarray]:
        v[name] = rng.standard_normal(shape).astype(np.float32)
        return name.split("/", 1)[1], v[name]

    mapping = [var(f"mapping/Dense{i}/{p}", *s) for i in range(2)
               for p, s in (("weight", (8, 8)), ("bias", (8,)))]
    syn = [var("synthesis/4x4/Const/const", 1, 16, 4, 4)]
    for r, conv, cin, cout in ((4, "Conv", 16, 16), (8, "Conv0_up", 16, 8), (8, "Conv1", 8, 8)):
        syn += [var(f"synthesis/{r}x{r}/{conv}/weight", 3, 3, cin, cout),
                var(f"synthesis/{r}x{r}/{conv}/mod_weight", 8, cin),
                var(f"synthesis/{r}x{r}/{conv}/mod_bias", cin),
                var(f"synthesis/{r}x{r}/{conv}/noise_strength"),
                var(f"synthesis/{r}x{r}/{conv}/bias", cout)]
    for r, cin in ((4, 16), (8, 8)):
        syn += [var(f"synthesis/{r}x{r}/ToRGB/weight", 1, 1, cin, 3),
                var(f"synthesis/{r}x{r}/ToRGB/mod_weight", 8, cin),
                var(f"synthesis/{r}x{r}/ToRGB/mod_bias", cin), var(f"synthesis/{r}x{r}/ToRGB/bias", 3)]
    syn += [var("synthesis/noise0", 1, 1, 4, 4), var("synthesis/noise1", 1, 1, 8, 8),
            var("synthesis/noise2", 1, 1, 8, 8)]
    v["dlatent_avg"] = rng.standard_normal(8).astype(np.float32)

    def network(name: str, variables, components=None, static=None) -> Network:
        return Network({"version": 4, "name": name, "static_kwargs": static or {},
                        "components": components or {}, "build_module_src": _evil_src(marker),
                        "build_func_name": f"training.networks_stylegan2.{name}",
                        "variables": variables})

    static = {"latent_size": 8, "dlatent_size": 8, "label_size": 0, "resolution": 8,
              "num_channels": 3, "mapping_layers": 2, "fmap_base": 32, "fmap_max": 16,
              "truncation_psi": 0.5}
    gs = network("G_main", [("dlatent_avg", v["dlatent_avg"])],
                 {"mapping": network("G_mapping", mapping), "synthesis": network("G_synthesis", syn)},
                 static)
    path.write_bytes(_dumps((network("G_main", []), network("D_stylegan2", []), gs), protocol))
    return v


@pytest.mark.parametrize("protocol", [2, 3])
def test_tensorflow_pickle_converts_with_the_documented_transposes_and_flips(tmp_path, protocol):
    marker = tmp_path / "build_module_src_ran"
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    tf = _tf_pickle(path, marker, protocol)
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

def _rosinality_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"style.1.weight": (8, 8), "style.1.bias": (8,), "style.2.weight": (8, 8),
              "style.2.bias": (8,), "input.input": (1, 16, 4, 4),
              "to_rgb1.conv.weight": (1, 3, 16, 1, 1), "to_rgb1.conv.modulation.weight": (16, 8),
              "to_rgb1.conv.modulation.bias": (16,), "to_rgb1.bias": (1, 3, 1, 1),
              "to_rgbs.0.conv.weight": (1, 3, 8, 1, 1), "to_rgbs.0.conv.modulation.weight": (8, 8),
              "to_rgbs.0.conv.modulation.bias": (8,), "to_rgbs.0.bias": (1, 3, 1, 1),
              "to_rgbs.0.upsample.kernel": (4, 4), "convs.0.conv.blur.kernel": (4, 4),
              "noises.noise_0": (1, 1, 4, 4), "noises.noise_1": (1, 1, 8, 8),
              "noises.noise_2": (1, 1, 8, 8)}
    for name, cin, cout in (("conv1", 16, 16), ("convs.0", 16, 8), ("convs.1", 8, 8)):
        shapes.update({f"{name}.conv.weight": (1, cout, cin, 3, 3),
                       f"{name}.conv.modulation.weight": (cin, 8), f"{name}.conv.modulation.bias": (cin,),
                       f"{name}.noise.weight": (1,), f"{name}.activate.bias": (cout,)})
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def test_rosinality_checkpoint_maps_to_our_keys(tmp_path):
    g = _rosinality_state()
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
    torch.save({"g_ema": _rosinality_state(), "g": _rosinality_state(1)}, path)
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
        path.write_bytes(_dumps({"G_ema": payload}, 4))
    elif where == "inside_g_ema_state":
        g, _ = _ada_generator(tmp_path / "src_ran")
        g.meta["state"]["_modules"]["mapping"].meta["state"]["lr_multiplier"] = payload
        _ada_pickle(path, g)
    else:
        path.write_bytes(_dumps(Network({"version": 4, "variables": [("x", payload)]}), 2))
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
    g, _ = _ada_generator(tmp_path / "ran")
    g.meta["state"][field] = value
    path = _ada_pickle(tmp_path / "g.pkl", g)
    if field == "_non_persistent_buffers_set":  # ignored when not a set: the file still reads
        assert set(read_stylegan2(path)[0]) == set(SKIP_SHAPES)
        return
    with pytest.raises(ValueError) as err:
        read_stylegan2(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_malformed_rosinality_tensor_gives_a_named_error(tmp_path):
    g = _rosinality_state()
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
    g, _ = _ada_generator(tmp_path / "ran")
    path = _ada_pickle(tmp_path / "g.pkl", g)
    blob = path.read_bytes()
    path.write_bytes(blob[: (len(blob) - 1 if cut == -1 else int(len(blob) * cut))])
    with pytest.raises(ValueError, match="corrupt or truncated pickle") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_nvidia_pickle_gives_a_named_error(tmp_path):
    g, _ = _ada_generator(tmp_path / "ran")
    path = _ada_pickle(tmp_path / "g.pkl", g)
    path.write_bytes(path.read_bytes()[:-8] + b"\xff" * 8)  # invalid opcodes where STOP was
    with pytest.raises(ValueError, match="corrupt or truncated pickle") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value)


def test_truncated_rosinality_file_gives_a_named_error(tmp_path):
    path = tmp_path / "r.pt"
    torch.save({"g_ema": _rosinality_state(), "latent_avg": torch.zeros(8)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt or truncated torch file") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value)


def test_malicious_rosinality_file_is_refused_naming_the_global(tmp_path):
    marker = tmp_path / "pwned"
    payload, name = _payload("posix.system", marker)
    path = tmp_path / "r.pt"
    torch.save({"g_ema": _rosinality_state(), "latent_avg": payload}, path)
    with pytest.raises(ValueError, match=f"disallowed global {name}"):
        read_stylegan2(path)
    assert not marker.exists()
