"""Fashion-MNIST: an IDX reader, pixel-range conversions and the seeded imbalanced training split.

The four IDX files (gzipped or not) are read from ``root`` → ``$MAGNET_LAB_FMNIST_DIR`` →
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). Parsed splits are
cached in-process; every call returns fresh copies, so callers may modify what they get.

The imbalanced split (``DEFAULT_IMBALANCE``) stands in for a biased collection: a catalogue
dominated by three product lines (T-shirt/top, Trouser, Sneaker — one upper-body, one
lower-body, one footwear class, so the bias is about *which* items, not about a body region)
kept at 100 %, and the seven other classes kept at 10 %. Class frequencies are then 6000 vs
600 per class (max/min = 10), the kind of skew MaGNET/polarity sampling is meant to undo.
"""
from __future__ import annotations

import functools
import gzip
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import config
from .validation import check_int

DEFAULT_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_EXPECTED_N = {"train": 60000, "test": 10000}

# IDX type code -> numpy big-endian dtype (http://yann.lecun.com/exdb/mnist/ "IDX file format").
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_HOW_TO_GET = ("Install Debian's package (`sudo apt-get install dataset-fashion-mnist`, files land "
               "in /usr/share/datasets/fashion-mnist), or download the four IDX files "
               "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
               "t10k-labels-idx1-ubyte.gz) from https://github.com/zalandoresearch/fashion-mnist "
               "(data/fashion) into a folder and set MAGNET_LAB_FMNIST_DIR to it.")


# --------------------------------------------------------------------------------------- IDX
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gzipped if its name ends in ``.gz``) into a native-endian numpy array.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; the data follow big-endian in C order. Raises FileNotFoundError for a missing file
    and ValueError naming the file for a bad magic number, an unknown type code, a truncated
    header or body, trailing bytes or an unreadable gzip stream.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (EOFError, OSError, zlib.error) as err:  # truncated or corrupt gzip stream
        raise ValueError(f"{path}: cannot decompress IDX file ({err})") from err
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} "
                         "(first two bytes must be zero)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header (need {header} bytes, got {len(raw)})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        kind = "truncated" if body < expected else "size mismatch (trailing bytes)"
        raise ValueError(f"{path}: {kind}: dims {dims} of {dtype.name} need {expected} data "
                         f"bytes, file has {body}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def fmnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder the Fashion-MNIST files are read from: ``root``, else ``$MAGNET_LAB_FMNIST_DIR``,
    else ``/usr/share/datasets/fashion-mnist``. Does not check that it exists."""
    if root is not None:
        return Path(root).expanduser()
    env = config.get("MAGNET_LAB_FMNIST_DIR")
    return Path(env).expanduser() if env else DEFAULT_FMNIST_DIR


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found in {folder}. {_HOW_TO_GET}")


@functools.lru_cache(maxsize=4)
def _load_split(split: str, folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    img_stem, lab_stem = _FILES[split]
    img_path, lab_path = _find(Path(folder), img_stem), _find(Path(folder), lab_stem)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{img_path}: expected uint8 images [N, 28, 28], got "
                         f"{images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{lab_path}: expected uint8 labels [N], got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_path} has {images.shape[0]} images but {lab_path} has "
                         f"{labels.shape[0]} labels")
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise ValueError(f"{lab_path}: label {int(labels.max())} out of range 0..9")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` ("train" or "test") as ``(images uint8 [N, 28, 28], labels int64 [N])``.

    Files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` are read from ``fmnist_dir(root)``
    and cached in-process; the returned tensors are copies (safe to modify). Raises ValueError for
    an unknown split or a malformed file (naming it) and FileNotFoundError, saying how to get the
    data, when the files are missing.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = fmnist_dir(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {folder} does not exist. {_HOW_TO_GET}")
    images, labels = _load_split(split, str(folder.resolve()))
    return images.clone(), labels.clone()


# ----------------------------------------------------------------------------- image folders
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_folder(folder: str | os.PathLike, n: int | None = None, *, size: int | None = None
                 ) -> torch.Tensor:
    """The first ``n`` images (all when None) of ``folder`` and its subfolders, in sorted path
    order (FFHQ's ``00000.png`` ... order), as uint8 ``[n, 3, H, W]`` RGB, resized to ``size``²
    (antialiased) when given; all images must then share one size. Used for real references
    such as FFHQ (``notebooks/02``'s ``real_images``). Raises FileNotFoundError for a missing
    folder or one without .png/.jpg images, ValueError naming a file that cannot be decoded or
    whose size differs, and for ``n`` < 1."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2.functional import resize

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"real image folder {folder} does not exist")
    check_int("n", n, low=1, optional=True)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {folder}")
    out = []
    for path in files[:n]:
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ValueError(f"{path}: not a readable image ({err})") from None
        img = torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # [3, H, W] uint8
        if size is not None:
            img = resize(img, [size, size], antialias=True)
        if out and img.shape != out[0].shape:
            raise ValueError(f"{path}: size {tuple(img.shape[1:])} differs from "
                             f"{tuple(out[0].shape[1:])}; pass size= to resize")
        out.append(img)
    return torch.stack(out)  # [n, 3, H, W]


# ----------------------------------------------------------------------------- pixel ranges
def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``) → float32 ``[N, 1, 28, 28]`` in [-1, 1]
    (0 ↦ -1, 255 ↦ 1). Raises TypeError for a non-uint8 tensor, ValueError for a wrong shape."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise TypeError(f"images must be a uint8 tensor, got "
                        f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape [N, H, W] or [N, 1, H, W], "
                         f"got {tuple(images.shape)}")
    return images.to(torch.float32).div(127.5).sub(1.0)  # [N, 1, H, W]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (any shape) → uint8 in [0, 255], clamped and rounded; the inverse of
    ``to_model_range`` up to the shape. Raises TypeError for a non-float tensor."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    # float64: a float32 (x + 1)·127.5 can land just off a .5 and round the other way
    return ((x.detach().double().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


# ------------------------------------------------------------------------- imbalanced split
@dataclass(frozen=True)
class ImbalanceSpec:
    """Per-class keep fractions of a seeded subsample: class ``c`` keeps exactly
    ``round(keep[c] * n_c)`` of its ``n_c`` examples, drawn without replacement."""

    keep: tuple[float, ...]
    story: str = ""

    def __post_init__(self) -> None:
        if any(not (0.0 <= f <= 1.0) for f in self.keep):
            raise ValueError(f"keep fractions must lie in [0, 1], got {self.keep}")

    def counts(self, class_counts: torch.Tensor) -> torch.Tensor:
        """Exact kept counts ``[C]`` for the given per-class counts ``[C]``."""
        if len(class_counts) != len(self.keep):
            raise ValueError(f"spec has {len(self.keep)} classes, data have {len(class_counts)}")
        return torch.tensor([int(round(f * int(n))) for f, n in zip(self.keep, class_counts)],
                            dtype=torch.int64)

    def to_dict(self) -> dict:
        return asdict(self)


DOMINANT_CLASSES: tuple[int, ...] = (0, 1, 7)  # T-shirt/top, Trouser, Sneaker
RARE_KEEP = 0.10
DEFAULT_IMBALANCE = ImbalanceSpec(
    keep=tuple(1.0 if c in DOMINANT_CLASSES else RARE_KEEP for c in range(len(CLASS_NAMES))),
    story="three dominant product lines (T-shirt/top, Trouser, Sneaker) kept at 100%, the other "
          "seven classes at 10%: 6000 vs 600 images per class, max/min frequency ratio 10",
)


def class_frequencies(labels: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """Fraction of ``labels`` (int ``[N]``, values in 0..n_classes-1) in each class: float64
    ``[n_classes]`` summing to 1. Raises ValueError for an empty, non-1-D or out-of-range input."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() == 0 or labels.is_floating_point():
        raise ValueError(f"labels must be a non-empty 1-D integer tensor, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got range "
                         f"{int(labels.min())}..{int(labels.max())}")
    counts = torch.bincount(labels.long(), minlength=n_classes).to(torch.float64)
    return counts / counts.sum()


def imbalanced_split(labels: torch.Tensor, *, spec: ImbalanceSpec = DEFAULT_IMBALANCE,
                     seed: int = 0) -> torch.Tensor:
    """Indices (int64 ``[M]``, sorted) of a seeded class-imbalanced subsample of ``labels`` [N].

    Class ``c`` keeps exactly ``round(spec.keep[c] * n_c)`` examples chosen uniformly without
    replacement by a ``torch.Generator`` seeded with ``seed``; the same seed gives the same
    indices. With ``DEFAULT_IMBALANCE`` on the 60k training set: 22 200 images, frequencies 0.270
    (dominant) vs 0.027 (rare). Raises ValueError for bad labels or a spec of the wrong length.
    """
    labels = torch.as_tensor(labels)
    n_classes = len(spec.keep)
    class_frequencies(labels, n_classes)  # validates
    gen = torch.Generator().manual_seed(int(seed))
    keep = spec.counts(torch.bincount(labels.long(), minlength=n_classes))
    chosen = []
    for c in range(n_classes):
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()  # [n_c]
        perm = torch.randperm(idx.numel(), generator=gen)
        chosen.append(idx[perm[: int(keep[c])]])
    return torch.sort(torch.cat(chosen)).values
