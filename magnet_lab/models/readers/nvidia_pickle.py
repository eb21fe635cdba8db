"""NVIDIA StyleGAN2/StyleGAN3 pickles, read by a restricted unpickler that never runs code from the file.

Two families. (1) stylegan2-ada-pytorch and stylegan3-repository ``.pkl``: a dict with ``G``,
``D``, ``G_ema``, ``training_set_kwargs``, ``augment_pipe``; each network is pickled as a call
of ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` holds ``type``
'class', ``version``, ``module_src`` (the network's source code), ``class_name`` (bare, e.g.
``Generator``: the module exists only as that source text) and ``state``
(the module ``__dict__``: ``_parameters``, ``_buffers``, ``_modules`` OrderedDicts,
``_init_args``/``_init_kwargs``). (2) the original TensorFlow StyleGAN2 ``.pkl`` (config-e/f
FFHQ): a tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` objects whose state holds
``version``, ``static_kwargs``, ``components`` and ``variables`` (name, numpy array) pairs.

Only the globals in ``ALLOWED_GLOBALS`` are resolved, each to a stand-in of ours: the persistence
reconstructor returns a record of ``meta`` (``module_src`` is kept as a string and never
executed), ``Network`` records its state, tensors are rebuilt from their storages through
``torch.load(weights_only=True)``, numpy arrays/scalars refuse object dtypes, EasyDict is a dict.
Any other global (``posix.system``, ``builtins.eval``, a user class) is refused, naming it, before
anything is called. The generator kept is ``G_ema`` (TF: ``Gs``). Its config comes from the
stored kwargs (ADA: nested ``synthesis_kwargs``; stylegan3 repository: flat, with
``num_fp16_res`` 4, ``conv_clamp`` 256 and ``w_avg_beta`` 0.998 by default; told apart by that
layout and, when no synthesis kwarg was given, by ``fused_modconv_default`` in the source text)
and is checked against the tensor shapes. A StyleGAN3 generator (stylegan3 repository's
``networks_stylegan3``: ``class SynthesisInput`` in the source text, or ``synthesis.input.*`` /
``synthesis.L<i>_<size>_<channels>.*`` layers) is read by ``read_stylegan3`` into the state-dict
names of that ``Generator`` (which ours, ``models.stylegan3.StyleGAN3Generator``, shares), its flat
synthesis kwargs nested as ``synthesis_kwargs`` with every default filled; ``read_generator``
returns whichever of the two a file holds.

TensorFlow → ADA key map (variables under component ``mapping/`` or ``synthesis/``; ``r`` a
resolution, weights ``[k, k, in, out]`` and dense ``[in, out]`` in TF):
``dlatent_avg`` → ``mapping.w_avg``; ``mapping/Dense{i}/weight`` (transposed) and ``/bias`` →
``mapping.fc{i}.*``; ``mapping/LabelEmbed/*`` → ``mapping.embed.*`` (weight transposed);
``synthesis/4x4/Const/const[0]`` → ``synthesis.b4.const``; ``synthesis/{r}x{r}/{Conv0_up,Conv1}``
(4x4: ``Conv``) → ``synthesis.b{r}.{conv0,conv1}``: ``weight`` permuted to ``[out, in, k, k]``
(``Conv0_up`` also flipped in both spatial axes), ``bias``, ``noise_strength``, ``mod_weight``
(transposed) → ``affine.weight``, ``mod_bias + 1`` → ``affine.bias``; ``synthesis/noise{j}[0, 0]``
→ ``noise_const`` of the j-th conv layer (b4.conv1 is 0, b{r}.conv0 is 2·log2(r)−5, b{r}.conv1 is
2·log2(r)−4); ``{r}x{r}/ToRGB/*`` → ``b{r}.torgb.*`` likewise (1×1, no flip); ``{r}x{r}/Skip/weight``
(flipped, permuted) → ``b{r}.skip.weight``. Kwargs: ``latent_size`` → z_dim, ``label_size`` →
c_dim, ``dlatent_size`` → w_dim, ``resolution``, ``num_channels``, ``mapping_layers``,
``label_fmaps``, ``mapping_fmaps``, ``mapping_nonlinearity``, ``mapping_lrmul``, ``w_avg_beta``,
``fmap_base`` (× 2 → channel_base), ``fmap_max``, ``num_fp16_res``, ``conv_clamp``,
``architecture``, ``resample_kernel``, ``use_noise``, ``nonlinearity``; the ``resample_filter``
buffers are built from ``resample_kernel``.
"""
from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import re
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _stylegan2 as sg2
from . import _stylegan3 as sg3
from .torch_file import refusal_detail

NAME = "nvidia-pickle"
DESCRIPTION = "an NVIDIA StyleGAN2/StyleGAN3 pickle"
SUFFIXES = (".pkl",)
READABLE = True
_MARKS = (b"torch_utils.persistence", b"dnnlib")  # globals NVIDIA's pickles name first


def sniff(head: bytes) -> bool:
    """True for a pickle (protocol 2+) whose first bytes name NVIDIA's persistence or dnnlib."""
    return head[:1] == b"\x80" and any(m in head for m in _MARKS)


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state, {})`` of the file's generator (``G_ema``); see ``read_generator`` for the config."""
    return read_generator(path)[1], {}


class _Persistent:
    """What ``_reconstruct_persistent_obj(meta)`` stands for: the meta dict, nothing imported."""

    def __init__(self, meta: Any) -> None:
        self.meta = meta


class _TFNetwork:
    """What a ``dnnlib.tflib.network.Network`` stands for: its pickled state, nothing built."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _EasyDict(dict):
    """``dnnlib.util.EasyDict`` as a plain dict subclass."""


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str, why: str = "is not on the allow-list") -> None:
        super().__init__(f"global {name} {why}")
        self.name, self.why = name, why


def _reconstruct_persistent(meta: Any) -> _Persistent:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise _Refused("torch_utils.persistence._reconstruct_persistent_obj",
                       "called with something other than a class meta dict")
    return _Persistent(meta)


def _load_storage(blob: Any) -> Any:
    if not isinstance(blob, bytes):
        raise _Refused("torch.storage._load_from_bytes", "called without bytes")
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _Refused("torch._utils._rebuild_tensor_v2", "called without a storage")
    return torch._utils._rebuild_tensor_v2(storage, offset, tuple(size), tuple(stride), False,
                                           OrderedDict())


def _rebuild_parameter(data: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise _Refused("torch._utils._rebuild_parameter", "called without a tensor")
    return data  # hooks and requires_grad are dropped: we want values


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _Refused("numpy.core.multiarray.scalar", "called with an object dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise _Refused("numpy.core.multiarray._reconstruct", "called for a class other than ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _latin1(text: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode", "called other than as protocol 2 writes bytes (latin1)")
    return text.encode("latin1")


ALLOWED_GLOBALS: dict[str, Any] = {
    "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent,
    "dnnlib.tflib.network.Network": _TFNetwork,
    "dnnlib.util.EasyDict": _EasyDict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.storage._load_from_bytes": _load_storage,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "_codecs.encode": _latin1,  # protocol 2's spelling of a bytes object
    "numpy.dtype": np.dtype,
    "numpy.ndarray": np.ndarray,
    **{f"{m}.multiarray.scalar": _np_scalar for m in ("numpy.core", "numpy._core")},
    **{f"{m}.multiarray._reconstruct": _np_reconstruct for m in ("numpy.core", "numpy._core")},
}


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be guarded
    """An unpickler that resolves only ``ALLOWED_GLOBALS`` (to our stand-ins) and refuses every
    other global, every persistent id, and any BUILD (attribute setting) aimed at a class or
    function rather than an instance, so a file cannot rewire our stand-ins for later loads."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self) -> None:
        target = self.stack[-2]
        if isinstance(target, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            raise _Refused(getattr(target, "__qualname__", type(target).__name__),
                           "is a class or function, and the pickle tries to set its attributes")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str) -> Any:
        # protocol < 3 writes Python 2 names (__builtin__.eval); name and judge the Python 3 ones
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key not in ALLOWED_GLOBALS:
            raise _Refused(key)
        return ALLOWED_GLOBALS[key]

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("<persistent id>", "is not supported in a raw pickle")


def restricted_load(path: str | os.PathLike) -> Any:
    """The object in the pickle at ``path``, unpickled with ``RestrictedUnpickler``. Raises
    ValueError naming the path and the refused global (nothing in the file was executed), or
    naming the path for a corrupt or truncated pickle."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh).load()
    except _Refused as err:
        refusal = (f"refused to load: the pickle references the global {err.name}, which "
                   f"{err.why} (nothing in the file was executed)")
    except Exception as err:  # noqa: BLE001 - EOFError, UnpicklingError, ... from junk
        # an embedded torch storage is read by torch.load(weights_only=True), whose text would
        # advise lifting that restriction: never repeated (refusal_detail)
        detail = str(err)[:200] if "weights_only" not in str(err) else refusal_detail(err)
        refusal = f"corrupt or truncated pickle ({type(err).__name__}: {detail})"
    raise ValueError(f"{path}: {refusal}") from None  # outside the handler: no chained advice


STYLEGAN2, STYLEGAN3 = "StyleGAN2Generator", "StyleGAN3Generator"  # registry architecture names


def read_generator(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """``(architecture, state, config)`` of the generator (``G_ema``/``Gs``) in an NVIDIA pickle,
    recognised by content: ``"StyleGAN3Generator"`` for a stylegan3-repository StyleGAN3
    generator (as ``read_stylegan3``), else ``"StyleGAN2Generator"`` (as ``read_stylegan2``: ADA,
    stylegan3-repository or TensorFlow). Raises ValueError naming the path for a refused global,
    a corrupt or truncated file, an unknown layout, or weights that disagree with their config."""
    return _read_generator(Path(path), None)


def read_stylegan2(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, config)`` of the generator (``G_ema``/``Gs``) in an NVIDIA StyleGAN2 pickle
    (ADA, stylegan3-repository or TensorFlow): ``state`` float32 CPU tensors under the ADA
    ``Generator.state_dict()`` names, ``config`` its ADA-layout kwargs with every default filled.
    Raises ValueError naming the path for a refused global, a corrupt or truncated file, a
    StyleGAN3 generator, an unknown layout, or weights that disagree with their config."""
    return _read_generator(Path(path), STYLEGAN2)[1:]


def read_stylegan3(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, config)`` of the StyleGAN3 generator ``G_ema`` in a stylegan3-repository pickle
    (configs T and R, conditional or not): ``state`` float32 CPU tensors under the official
    ``Generator.state_dict()`` names (filters included), ``config`` the kwargs of our
    ``StyleGAN3Generator`` with every default filled. Raises ValueError naming the path for a
    refused global (nothing in the file is executed), a corrupt or truncated file, a file that
    holds no StyleGAN3 generator, or weights that disagree with their config."""
    return _read_generator(Path(path), STYLEGAN3)[1:]


def _read_generator(path: Path, only: str | None
                    ) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """The generator of the pickle at ``path``; ``only`` (an architecture name) refuses the other."""
    data = restricted_load(path)
    not_sg3 = (f"{path}: not a StyleGAN3 generator (no SynthesisInput in its source, no "
               "synthesis.input / synthesis.L* layers); StyleGAN2 reads with read_stylegan2")
    try:
        tf = (data[-1] if isinstance(data, tuple) and data
              and all(isinstance(n, _TFNetwork) for n in data)
              else data if isinstance(data, _TFNetwork) else None)
        if tf is not None:
            if only == STYLEGAN3:
                raise ValueError(not_sg3)
            return (STYLEGAN2, *_from_tf(tf, path))
        if isinstance(data, dict) and isinstance(data.get("G_ema"), _Persistent):
            g = data["G_ema"]
            if only != STYLEGAN2 and _is_stylegan3(g, path):
                return (STYLEGAN3, *_from_persistent_sg3(g, path))
            if only == STYLEGAN3:
                raise ValueError(not_sg3)
            return (STYLEGAN2, *_from_persistent(g, path))  # refuses a StyleGAN3 generator
    except (TypeError, AttributeError, KeyError, IndexError, RuntimeError) as err:  # odd values
        raise ValueError(f"{path}: malformed StyleGAN pickle ({type(err).__name__}: "
                         f"{str(err)[:200]})") from err
    raise ValueError(f"{path}: a pickle without a StyleGAN generator (expected a dict with "
                     f"'G_ema' or TensorFlow networks, got {type(data).__name__})")


def _meta_text(g: _Persistent) -> tuple[str, str]:
    """``(class_name, module_src)`` of a persistence record, as text (never executed)."""
    module_src = g.meta.get("module_src")
    return str(g.meta.get("class_name", "")), module_src if isinstance(module_src, str) else ""


def _is_stylegan3(g: _Persistent, path: Path) -> bool:
    class_name, module_src = _meta_text(g)
    if sg3.is_stylegan3((), class_name, module_src):
        return True
    return sg3.is_stylegan3(_flatten(g, "", path), class_name, module_src)


def _init_kwargs(g: _Persistent) -> tuple[list[Any], dict[str, Any]]:
    own = g.meta.get("state") or {}
    args = list(own.get("_init_args", own.get("init_args", ())) or ())
    kwargs = dict(own.get("_init_kwargs", own.get("init_kwargs", {})) or {})
    return args, kwargs


def _from_persistent_sg3(g: _Persistent, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    class_name, _ = _meta_text(g)
    if class_name.rsplit(".", 1)[-1] != "Generator":
        raise ValueError(f"{path}: G_ema is {class_name!r}, not a StyleGAN3 Generator")
    state = _flatten(g, "", path)
    args, kwargs = _init_kwargs(g)
    names = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs"]
    if len(args) > len(names):
        raise ValueError(f"{path}: StyleGAN3 Generator stored {len(args)} positional arguments; "
                         f"at most {len(names)} are known")
    kwargs.update(zip(names, args))
    config = sg3.normalise_config(kwargs, source=str(path))
    sg3.check_state(state, config, str(path))
    return state, config


def _from_persistent(g: _Persistent, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    class_name, module_src = _meta_text(g)  # the bare name ("Generator") in NVIDIA's files
    state = _flatten(g, "", path)
    sg2.refuse_stylegan3(state, class_name, str(path), module_src)
    if class_name.rsplit(".", 1)[-1] != "Generator":
        raise ValueError(f"{path}: G_ema is {class_name!r}, not a StyleGAN2 Generator")
    args, kwargs = _init_kwargs(g)
    # ADA nests synthesis_kwargs; the stylegan3 repository's networks_stylegan2 is flat and its
    # source (the only trace of which repository wrote the file) has fused_modconv_default
    flat = "synthesis_kwargs" not in kwargs and len(args) < 7 and (
        "networks_stylegan2" in class_name or "fused_modconv_default" in module_src
        or bool(set(kwargs) - {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels",
                               "mapping_kwargs"}))
    names = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs"]
    kwargs.update(zip(names + ([] if flat else ["synthesis_kwargs"]), args))
    config = sg2.normalise_config(kwargs, flat=flat, source=str(path))
    sg2.check_state(state, config, str(path))
    return state, config


def _flatten(module: _Persistent, prefix: str, path: Path) -> dict[str, torch.Tensor]:
    """``state_dict()`` of a pickled module tree: persistent parameters and buffers, by name."""
    st = module.meta.get("state")
    if not isinstance(st, dict) or not all(isinstance(st.get(k), dict)
                                           for k in ("_parameters", "_buffers", "_modules")):
        raise ValueError(f"{path}: {prefix or 'G_ema'} has no module state "
                         "(_parameters/_buffers/_modules)")
    skip = st.get("_non_persistent_buffers_set")
    skip = skip if isinstance(skip, (set, frozenset)) else set()
    out: dict[str, torch.Tensor] = {}
    for name, t in [*st["_parameters"].items(), *((n, b) for n, b in st["_buffers"].items()
                                                   if n not in skip)]:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{path}: {prefix}{name} is a {type(t).__name__}, not a tensor")
        out[prefix + name] = t.detach().to(torch.float32).contiguous()
    for name, sub in st["_modules"].items():
        if sub is None:
            continue
        if not isinstance(sub, _Persistent):
            raise ValueError(f"{path}: submodule {prefix}{name} is not a persistent network")
        out.update(_flatten(sub, f"{prefix}{name}.", path))
    return out


_TF_KWARGS = {  # TF static kwarg -> (section, ADA name); defaults are ADA's
    "latent_size": (None, "z_dim"), "label_size": (None, "c_dim"), "dlatent_size": (None, "w_dim"),
    "resolution": (None, "img_resolution"), "num_channels": (None, "img_channels"),
    "mapping_layers": ("mapping_kwargs", "num_layers"),
    "label_fmaps": ("mapping_kwargs", "embed_features"),
    "mapping_fmaps": ("mapping_kwargs", "layer_features"),
    "mapping_nonlinearity": ("mapping_kwargs", "activation"),
    "mapping_lrmul": ("mapping_kwargs", "lr_multiplier"),
    "w_avg_beta": ("mapping_kwargs", "w_avg_beta"),
    "fmap_base": ("synthesis_kwargs", "channel_base"), "fmap_max": ("synthesis_kwargs", "channel_max"),
    "num_fp16_res": ("synthesis_kwargs", "num_fp16_res"),
    "conv_clamp": ("synthesis_kwargs", "conv_clamp"),
    "architecture": ("synthesis_kwargs", "architecture"),
    "resample_kernel": ("synthesis_kwargs", "resample_filter"),
    "use_noise": ("synthesis_kwargs", "use_noise"), "nonlinearity": ("synthesis_kwargs", "activation"),
}
_TF_IGNORED = ("truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure")
_TF_TOP_DEFAULTS = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024, "img_channels": 3}


def _tf_config(static: dict[str, Any], path: Path) -> dict[str, Any]:
    unknown = sorted(set(static) - set(_TF_KWARGS) - set(_TF_IGNORED))
    if unknown:
        raise ValueError(f"{path}: unknown TensorFlow generator kwargs {unknown}")
    kw: dict[str, Any] = dict(_TF_TOP_DEFAULTS, mapping_kwargs={}, synthesis_kwargs={"channel_base": 32768})
    for tf_name, (section, name) in _TF_KWARGS.items():
        value = static.get(tf_name)
        if value is None:
            continue
        if tf_name == "fmap_base":
            value = value * 2  # TF counts channels from 2*fmap_base/res; ADA from channel_base/res
        (kw[section] if section else kw)[name] = value
    return sg2.normalise_config(kw, flat=False, source=str(path))


def _tf_variables(net: _TFNetwork, prefix: str, out: dict[str, np.ndarray], path: Path) -> None:
    st = getattr(net, "state", None)
    if not isinstance(st, dict) or "variables" not in st:
        raise ValueError(f"{path}: TensorFlow network {prefix or 'Gs'} has no variables")
    for name, value in st["variables"]:
        out[prefix + name] = np.asarray(value)
    for name, comp in (st.get("components") or {}).items():
        _tf_variables(comp, f"{prefix}{name}/", out, path)


def _from_tf(gs: _TFNetwork, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    st = getattr(gs, "state", None) or {}
    if int(st.get("version", 0)) < 4:
        raise ValueError(f"{path}: TensorFlow network pickle version {st.get('version')} < 4 is "
                         "not read (only StyleGAN2's)")
    config = _tf_config(dict(st.get("static_kwargs") or {}), path)
    tf: dict[str, np.ndarray] = {}
    _tf_variables(gs, "", tf, path)
    if any(re.fullmatch(r"(synthesis/)?ToRGB_lod\d+/.*", k) for k in tf):
        raise ValueError(f"{path}: a StyleGAN1-style (ToRGB_lod) TensorFlow network; only "
                         "StyleGAN2 networks are read")
    want = sg2.expected_shapes(config)
    state: dict[str, torch.Tensor] = {}
    for key in want:
        value = _tf_value(key, tf, config, path)
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).reshape(want[key])
    sg2.check_state(state, config, str(path))
    return state, config


def _tf_value(key: str, tf: dict[str, np.ndarray], config: dict[str, Any], path: Path) -> Any:
    """The value of ADA key ``key`` from the TF variables (the map in the module docstring)."""
    if key.endswith("resample_filter"):
        return sg2.resample_filter(config["synthesis_kwargs"]["resample_filter"]).numpy()
    if key == "mapping.w_avg":
        return _tf_get(tf, "dlatent_avg", path)
    m = re.fullmatch(r"mapping\.(fc(\d+)|embed)\.(weight|bias)", key)
    if m:
        src = f"mapping/Dense{m.group(2)}" if m.group(2) is not None else "mapping/LabelEmbed"
        v = _tf_get(tf, f"{src}/{m.group(3)}", path)
        return v.T if m.group(3) == "weight" else v
    if key == "synthesis.b4.const":
        return _tf_get(tf, "synthesis/4x4/Const/const", path)[0]
    m = re.fullmatch(r"synthesis\.b(\d+)\.(conv0|conv1|torgb|skip)\.(.+)", key)
    if not m:
        raise ValueError(f"{path}: no TensorFlow source for {key}")
    r, layer, leaf = int(m.group(1)), m.group(2), m.group(3)
    if leaf == "noise_const":
        j = 0 if r == 4 else 2 * int(np.log2(r)) - (5 if layer == "conv0" else 4)
        return _tf_get(tf, f"synthesis/noise{j}", path)[0, 0]
    src = {"conv0": "Conv0_up", "conv1": "Conv" if r == 4 else "Conv1", "torgb": "ToRGB",
           "skip": "Skip"}[layer]
    v = _tf_get(tf, f"synthesis/{r}x{r}/{src}/" + {"affine.weight": "mod_weight",
                                                    "affine.bias": "mod_bias"}.get(leaf, leaf), path)
    if leaf == "affine.weight":
        return v.T
    if leaf == "affine.bias":
        return v + 1
    if leaf == "weight":
        if layer in ("conv0", "skip"):
            v = v[::-1, ::-1]  # TF's transposed conv uses the kernel flipped relative to ours
        return v.transpose(3, 2, 0, 1)  # [k, k, in, out] -> [out, in, k, k]
    return v


def _tf_get(tf: dict[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    if name not in tf:
        raise ValueError(f"{path}: TensorFlow variable {name} not found")
    v = tf[name]
    if v.dtype.hasobject:
        raise ValueError(f"{path}: TensorFlow variable {name} is not numeric")
    return v
