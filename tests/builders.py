"""Builders of StyleGAN2 checkpoints in NVIDIA's, TensorFlow's and rosinality's published
structures, shared by the reader tests (tests/test_nvidia_readers.py, test_stylegan2_loading.py).

Every file is built by our own code (no NVIDIA code or weights): persistence objects are pickled
as calls of a stand-in registered under ``torch_utils.persistence._reconstruct_persistent_obj``
(the name NVIDIA's files use), TF networks as a stand-in ``dnnlib.tflib.network.Network``.
Embedded sources carry a payload that would create a marker file if it were ever executed.
"""
from __future__ import annotations

import contextlib
import json
import math
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magnet_lab.models.biggan import BigGANDeep
from magnet_lab.models.stylegan2 import StyleGAN2Generator
from magnet_lab.models.stylegan3 import CONFIGS, StyleGAN3Generator

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
def nvidia_names():
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


def nvidia_dumps(obj: Any, protocol: int) -> bytes:
    with nvidia_names():
        return pickle.dumps(obj, protocol=protocol)


def evil_src(marker: Path) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"


class PersistentNet:
    """A persistence object as NVIDIA pickles it: ``reconstruct_persistent_obj(meta)``, with the
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
        self.meta = {"type": "class", "version": 4, "module_src": evil_src(marker) + src,
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


def ada_generator(marker: Path, *, flat: bool = False, architecture: str = "skip",
                   seed: int = 0) -> tuple[PersistentNet, dict[str, torch.Tensor]]:
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

    def net(cls: str, prefix: str, params=(), buffers=(), modules=None, init_kwargs=None) -> PersistentNet:
        return PersistentNet(cls, marker,
                    params={k: rand(prefix + k, *s) for k, s in params},
                    buffers={k: (filt(prefix + k) if k == "resample_filter" else rand(prefix + k, *s))
                             for k, s in buffers},
                    modules=modules, init_kwargs=init_kwargs, src=src)

    def fc(prefix: str, fin: int, fout: int) -> PersistentNet:
        return net("FullyConnectedLayer", prefix, [("weight", (fout, fin)), ("bias", (fout,))])

    def layer(prefix: str, cin: int, cout: int, res: int) -> PersistentNet:
        return net("SynthesisLayer", prefix,
                   [("weight", (cout, cin, 3, 3)), ("noise_strength", ()), ("bias", (cout,))],
                   [("resample_filter", None), ("noise_const", (res, res))],
                   {"affine": fc(prefix + "affine.", 8, cin)})

    def torgb(prefix: str, cin: int) -> PersistentNet:
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


def ada_pickle(path: Path, g: PersistentNet, protocol: int = 4) -> Path:
    marker = path.parent / "src_ran"
    d = PersistentNet("Discriminator", marker)
    aug = PersistentNet("AugmentPipe", marker, buffers={"p": torch.zeros([])})
    data = {"G": g, "D": d, "G_ema": g, "augment_pipe": aug,
            "training_set_kwargs": EasyDict(path="ffhq.zip", resolution=8, max_size=np.int64(70000))}
    path.write_bytes(nvidia_dumps(data, protocol))
    return path



def tf_pickle(path: Path, marker: Path, protocol: int = 2) -> dict[str, np.ndarray]:
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
                        "components": components or {}, "build_module_src": evil_src(marker),
                        "build_func_name": f"training.networks_stylegan2.{name}",
                        "variables": variables})

    static = {"latent_size": 8, "dlatent_size": 8, "label_size": 0, "resolution": 8,
              "num_channels": 3, "mapping_layers": 2, "fmap_base": 32, "fmap_max": 16,
              "truncation_psi": 0.5}
    gs = network("G_main", [("dlatent_avg", v["dlatent_avg"])],
                 {"mapping": network("G_mapping", mapping), "synthesis": network("G_synthesis", syn)},
                 static)
    path.write_bytes(nvidia_dumps((network("G_main", []), network("D_stylegan2", []), gs), protocol))
    return v



def rosinality_state(seed: int = 0) -> dict[str, torch.Tensor]:
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


# --------------------------------------------------------------------------- tiny StyleGAN3

Z = W = 8
SMALL = dict(channel_base=128, channel_max=8, num_layers=4, num_critical=2, margin_size=2)


def make_stylegan3(config: str = "T", c_dim: int = 0, seed: int = 0, *, z_dim: int = Z,
                   w_dim: int = W, **synthesis) -> StyleGAN3Generator:
    """A tiny float64 G (16², 3 channels) whose biases, input affine, magnitude_ema and w_avg are
    random (not their initial values), so every term of the forward pass matters."""
    torch.manual_seed(seed)
    kw = {**SMALL, **{k: v for k, v in CONFIGS[config].items()
                      if k not in ("channel_base", "channel_max")}, **synthesis}
    G = StyleGAN3Generator(z_dim, c_dim, w_dim, 16, 3, None, kw).double().eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
        G.synthesis.input.affine.weight.normal_(0, 0.5)
        for name, b in G.named_buffers():
            if name.endswith("magnitude_ema"):
                b.copy_(torch.rand([], dtype=b.dtype) + 0.5)
        G.mapping.w_avg.normal_()
    return G.requires_grad_(False)


SRC = "class SynthesisInput(torch.nn.Module):\n    pass\n"  # how networks_stylegan3 reads as text
OFFICIAL_KW = {  # what the official train.py passes: flat synthesis kwargs (ours: nested)
    "T": dict(channel_base=SMALL["channel_base"], channel_max=SMALL["channel_max"]),
    "R": dict(channel_base=SMALL["channel_base"], channel_max=SMALL["channel_max"],
              conv_kernel=1, use_radial_filters=True)}


def stylegan3_record(G: StyleGAN3Generator, marker: Path, config: str) -> PersistentNet:
    """``G`` as the stylegan3 repository pickles its ``G_ema``: a persistence record per module,
    the official attributes in each ``__dict__`` (numpy scalars and arrays, None filters)."""
    state = {k: v.detach().float().clone() for k, v in G.state_dict().items()}

    def net(cls: str, prefix: str, params=(), buffers=(), modules=None, attrs=None,
            init_kwargs=None) -> PersistentNet:
        n = PersistentNet(cls, marker, params={k: state[prefix + k] for k in params},
                 buffers={k: state.get(prefix + k) for k in buffers},  # None: no filter
                 modules=modules, init_kwargs=init_kwargs, src=SRC)
        n.meta["state"].update(attrs or {})
        return n

    def fc(prefix: str) -> PersistentNet:
        return net("FullyConnectedLayer", prefix, ["weight", "bias"],
                   attrs={"weight_gain": np.float64(0.1), "activation": "linear"})

    layers = {}
    for name in G.synthesis.layer_names:
        s = getattr(G.synthesis, name).spec
        p = f"synthesis.{name}."
        layers[name] = net("SynthesisLayer", p, ["weight", "bias"],
                           ["magnitude_ema", "up_filter", "down_filter"], {"affine": fc(p + "affine.")},
                           attrs={"in_size": np.broadcast_to(np.asarray(s.in_size), [2]),
                                  "padding": list(s.padding), "in_cutoff": np.float64(s.in_cutoff),
                                  "use_fp16": np.bool_(False), "up_factor": s.up_factor})
    inp = net("SynthesisInput", "synthesis.input.", ["weight"], ["transform", "freqs", "phases"],
              {"affine": fc("synthesis.input.affine.")},
              attrs={"size": np.broadcast_to(np.asarray(G.synthesis.input.size), [2]),
                     "sampling_rate": np.float64(G.synthesis.input.sampling_rate)})
    synthesis = net("SynthesisNetwork", "synthesis.", modules={"input": inp, **layers},
                    attrs={"layer_names": list(G.synthesis.layer_names), "margin_size": 2})
    fcs = {f"fc{i}": fc(f"mapping.fc{i}.") for i in range(2)}
    mapping = net("MappingNetwork", "mapping.", buffers=["w_avg"],
                  modules={"embed": fc("mapping.embed.") if G.c_dim else None, **fcs})
    init = dict(z_dim=G.z_dim, c_dim=G.c_dim, w_dim=G.w_dim, img_resolution=16, img_channels=3,
                mapping_kwargs=EasyDict(num_layers=2), magnitude_ema_beta=0.5 ** (32 / 2e4),
                num_layers=SMALL["num_layers"], num_critical=SMALL["num_critical"],
                margin_size=SMALL["margin_size"], **OFFICIAL_KW[config])
    return net("Generator", "", modules={"synthesis": synthesis, "mapping": mapping},
               init_kwargs=init)


def stylegan3_snapshot(path: Path, config: str = "T", *, c_dim: int = 0, seed: int = 0,
                       z_dim: int = Z, w_dim: int = W) -> tuple[Path, StyleGAN3Generator]:
    """A tiny StyleGAN3 (``make_stylegan3``, float32) written to ``path`` as the stylegan3
    repository's training snapshot (``G``, ``D``, ``G_ema``, ``augment_pipe``,
    ``training_set_kwargs``; module sources carry a payload that would create
    ``path.parent / "src_ran"`` if executed); returns the path and the generator."""
    G = make_stylegan3(config, c_dim, seed, z_dim=z_dim, w_dim=w_dim).float()
    return ada_pickle(path, stylegan3_record(G, path.parent / "src_ran", config)), G


# --------------------------------------------------------------------------- tiny BigGAN-deep

# 4×4 → 8 → 16, attention before block 1 (16 channels), 3 classes
BIGGAN_TINY = dict(output_dim=16, z_dim=4, class_embed_dim=4, channel_width=8, num_classes=3,
            layers=[[True, 4, 2], [True, 2, 1]], attention_layer_position=1, eps=1e-4,
            n_stats=51)


def randomise_biggan(G: BigGANDeep, seed: int = 0) -> BigGANDeep:
    """Random statistics (distinct per truncation), biases and attention gain, and weights scaled
    so that the tanh output is neither saturated nor tiny: every term of the forward matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(G.named_parameters()) + list(G.named_buffers()):
            r = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
            if name.endswith("running_means"):
                t.copy_(0.3 * r)
            elif name.endswith("running_vars"):
                t.copy_(0.5 + r.abs())
            elif name.endswith("gamma"):
                t.fill_(0.8)
            elif name.endswith("bias"):
                t.copy_(0.1 * r)
            elif t.ndim >= 2:  # conv and linear weights: unit-ish gain
                t.copy_(r / math.sqrt(t[0].numel()))
            else:  # final bn weight
                t.copy_(1 + 0.1 * r)
    return G


def write_biggan_folder(model: BigGANDeep, path: Path, config: dict | None = None) -> dict:
    """The reference's folder for ``model``: weight_orig = our weight, u/v its top singular
    vectors (σ = σ_max > 0), so the folded weight is weight / σ_max. Returns the state written."""
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and name != "embeddings":
            w = state.pop(f"{name}.weight")
            U, S, Vh = torch.linalg.svd(w.double().reshape(w.shape[0], -1), full_matrices=False)
            state[f"{name}.weight_orig"] = w
            state[f"{name}.weight_u"] = U[:, 0].float()
            state[f"{name}.weight_v"] = Vh[0].float()
    torch.save(state, path / "pytorch_model.bin")
    cfg = {k: v for k, v in (config or model.config()).items() if k != "img_channels"}
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return state


def conditional_stylegan2(c_dim: int = 3, seed: int = 0) -> StyleGAN2Generator:
    """A tiny conditional StyleGAN2 (z 8, w 8, 8×8 RGB, ``c_dim`` classes, float32) with random
    biases, noise strengths and w_avg, so the class embedding and truncation both matter."""

    torch.manual_seed(seed)
    G = StyleGAN2Generator(8, c_dim, 8, 8, 3, dict(num_layers=2),
                           dict(channel_base=64, channel_max=16)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                p.add_(0.3 * torch.randn_like(p))
        G.get_submodule("mapping").w_avg.copy_(torch.randn(8))
    return G.requires_grad_(False)


def write_conditional_stylegan2(path: Path, c_dim: int = 3, seed: int = 0) -> Path:
    """``conditional_stylegan2`` saved as safetensors + JSON sidecar (the project's format),
    which ``load_generator`` and the command line read."""
    from magnet_lab.models.readers import save_checkpoint

    G = conditional_stylegan2(c_dim, seed)
    return save_checkpoint(G, path, {"architecture": "StyleGAN2Generator", "kwargs": G.config()})


# --------------------------------------------------------------------------- real-image references

def random_inception_weights(path: Path, seed: int = 0) -> Path:
    """torch-fidelity's InceptionV3 state dict with seeded random weights (its initialisation,
    nothing downloaded), written to ``path``: what ``features.standard_extractor("inception",
    path)`` reads in place of ``weights-inception-2015-12-05-6726825d.pth`` in tests."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as incep

    with torch.random.fork_rng(), \
            mock.patch.object(incep, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(incep.FeatureExtractorInceptionV3, "load_state_dict",
                              lambda self, *a, **k: None):
        torch.manual_seed(seed)  # the layers' initialisation, the caller's RNG state kept
        state = incep.FeatureExtractorInceptionV3("inception-v3-compat", ["64"]).state_dict()
    torch.save(state, path)
    return path


def real_image_folder(path: Path, n: int, size: int = 16, seed: int = 0) -> Path:
    """``n`` seeded random RGB PNGs (``size``², smooth colour blobs, ``00000.png`` ...) in the
    folder ``path``: a stand-in for a user's ``real_images`` folder (FFHQ, AFHQv2)."""
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)  # [n, 3, 4, 4] in [0, 1)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    for i, im in enumerate((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(path / f"{i:05d}.png")
    return path
