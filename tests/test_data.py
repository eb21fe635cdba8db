"""Fashion-MNIST reader, pixel conversions and the seeded imbalanced split."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from magnet_lab import data

REAL_DIR = data.DEFAULT_FMNIST_DIR


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=dtype).tobytes()


def _write(path: Path, payload: bytes) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _fake_fmnist(folder: Path, n: int, gz: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    for split in ("train", "t10k"):
        _write(folder / f"{split}-images-idx3-ubyte{suffix}", _idx_bytes(images))
        _write(folder / f"{split}-labels-idx1-ubyte{suffix}", _idx_bytes(labels))
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_synthetic_idx_exactly(tmp_path, gz):
    images, labels = _fake_fmnist(tmp_path, 30, gz)
    for split in ("train", "test"):
        x, y = data.fashion_mnist(split, root=tmp_path)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert np.array_equal(x.numpy(), images) and np.array_equal(y.numpy(), labels)


def test_fashion_mnist_returns_copies_not_the_cache(tmp_path):
    _fake_fmnist(tmp_path, 10, gz=True)
    x, _ = data.fashion_mnist("train", root=tmp_path)
    x.zero_()
    x2, _ = data.fashion_mnist("train", root=tmp_path)
    assert int(x2.sum()) > 0


def test_fashion_mnist_env_variable_selects_folder(tmp_path, monkeypatch):
    images, _ = _fake_fmnist(tmp_path, 20, gz=False, seed=3)
    monkeypatch.setenv("MAGNET_LAB_FMNIST_DIR", str(tmp_path))
    x, _ = data.fashion_mnist("test")
    assert np.array_equal(x.numpy(), images)


@pytest.mark.parametrize("code,arr", [
    (0x0B, np.array([[-3, 1000], [7, -32768]], dtype=np.int16)),
    (0x0C, np.array([1, -2, 2**31 - 1], dtype=np.int32)),
    (0x0D, np.array([[0.5, -1.25]], dtype=np.float32)),
    (0x0E, np.array([np.pi, -np.e])),
])
def test_read_idx_round_trips_big_endian_types(tmp_path, code, arr):
    out = data.read_idx(_write(tmp_path / "x-idx.gz", _idx_bytes(arr, code)))
    assert out.dtype.isnative and out.shape == arr.shape
    assert np.array_equal(out, arr)


def test_read_idx_bad_magic_names_the_file(tmp_path):
    payload = bytearray(_idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    payload[0] = 0x1F
    path = _write(tmp_path / "train-images-idx3-ubyte", bytes(payload))
    with pytest.raises(ValueError, match=r"magic.*") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"])
def test_read_idx_truncated_body_names_the_file(tmp_path, name):
    payload = _idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-100]
    path = _write(tmp_path / name, payload)
    with pytest.raises(ValueError, match="truncated") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip_stream_names_the_file(tmp_path):
    path = _write(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx_bytes(np.arange(5000) % 10))
    path.write_bytes(path.read_bytes()[:-30])  # cut the gzip stream itself
    with pytest.raises(ValueError) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_corrupt_deflate_data_names_the_file(tmp_path):
    blob = bytearray(gzip.compress(_idx_bytes(np.zeros((50, 28, 28), np.uint8))))
    blob[20:30] = b"\xff" * 10
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="decompress") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_trailing_bytes_are_a_size_mismatch(tmp_path):
    path = _write(tmp_path / "x-idx", _idx_bytes(np.zeros((3,), np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="size mismatch") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_fashion_mnist_count_mismatch_names_both_files(tmp_path):
    _fake_fmnist(tmp_path, 10, gz=False)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(9, np.uint8)))
    with pytest.raises(ValueError, match="labels"):
        data.fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.fashion_mnist("train", root=tmp_path / "nowhere")
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "MAGNET_LAB_FMNIST_DIR" in msg


def test_fashion_mnist_missing_file_says_how_to_get_it(tmp_path):
    _fake_fmnist(tmp_path, 10, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*MAGNET_LAB_FMNIST_DIR"):
        data.fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_rejects_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        data.fashion_mnist("validation", root=tmp_path)


def test_pixel_range_round_trip_is_exact():
    x = torch.arange(256, dtype=torch.uint8).repeat(4)[: 28 * 28].reshape(1, 28, 28)
    m = data.to_model_range(x)
    assert m.shape == (1, 1, 28, 28) and m.dtype == torch.float32
    assert float(m.min()) == -1.0 and float(m.max()) == 1.0
    assert torch.equal(data.to_uint8(m)[:, 0], x)
    assert torch.equal(data.to_uint8(torch.tensor([-3.0, 2.0])), torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(TypeError):
        data.to_model_range(m)


def test_class_frequencies_sum_to_one_and_validate():
    f = data.class_frequencies(torch.tensor([0, 0, 1, 9]))
    assert f.dtype == torch.float64 and f.shape == (10,)
    assert torch.allclose(f, torch.tensor([0.5, 0.25] + [0.0] * 7 + [0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="0..9"):
        data.class_frequencies(torch.tensor([0, 10]))


def _balanced_labels(per_class: int = 6000) -> torch.Tensor:
    return torch.arange(10).repeat_interleave(per_class)[torch.randperm(10 * per_class,
                                                                        generator=torch.Generator().manual_seed(1))]


def test_imbalanced_split_is_seeded():
    labels = _balanced_labels()
    a = data.imbalanced_split(labels, seed=0)
    assert torch.equal(a, data.imbalanced_split(labels, seed=0))
    assert not torch.equal(a, data.imbalanced_split(labels, seed=1))
    assert torch.equal(a, torch.unique(a))  # sorted, no repeats


def test_imbalanced_split_matches_documented_spec_exactly():
    labels = _balanced_labels()
    idx = data.imbalanced_split(labels)
    counts = torch.bincount(labels[idx], minlength=10)
    expected = torch.tensor([6000 if c in (0, 1, 7) else 600 for c in range(10)])
    assert torch.equal(counts, expected)
    assert data.DEFAULT_IMBALANCE.keep == tuple(1.0 if c in (0, 1, 7) else 0.1 for c in range(10))
    freq = data.class_frequencies(labels[idx])
    assert torch.allclose(freq, expected.double() / 22200, atol=0, rtol=1e-15)
    assert float(freq.max() / freq.min()) == pytest.approx(10.0)


def test_imbalanced_split_custom_spec_counts():
    labels = _balanced_labels(100)
    spec = data.ImbalanceSpec(keep=tuple(0.1 * (c + 1) for c in range(10)))
    idx = data.imbalanced_split(labels, spec=spec, seed=5)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [10 * (c + 1) for c in range(10)]
    with pytest.raises(ValueError):
        data.ImbalanceSpec(keep=(1.5,) * 10)


@pytest.fixture(scope="module")
def real_train():
    if not REAL_DIR.is_dir():
        print(f"SKIP REASON: {REAL_DIR} is absent (install with `sudo apt-get install "
              "dataset-fashion-mnist`)")
        pytest.skip(f"{REAL_DIR} absent: real Fashion-MNIST not installed "
                    "(sudo apt-get install dataset-fashion-mnist)")
    return data.fashion_mnist("train", root=REAL_DIR)


def test_real_fashion_mnist_has_60000_and_10000_balanced(real_train):
    x, y = real_train
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert torch.bincount(y, minlength=10).tolist() == [6000] * 10
    xt, yt = data.fashion_mnist("test", root=REAL_DIR)
    assert xt.shape == (10000, 28, 28)
    assert torch.bincount(yt, minlength=10).tolist() == [1000] * 10
    assert 0 < float(x[:100].float().mean()) < 255  # not all-black / all-white


def test_real_imbalanced_split_has_documented_counts(real_train):
    _, y = real_train
    idx = data.imbalanced_split(y, seed=0)
    assert len(idx) == 22200
    assert torch.bincount(y[idx], minlength=10).tolist() == [6000, 6000, 600, 600, 600, 600, 600,
                                                             6000, 600, 600]
