"""The persisted volume bank: format round trip, safe loading, merging, resumable builds."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import magnet_lab
from magnet_lab.bank import FORMAT, VolumeBank, build, shard_name
from magnet_lab.spectra import SpectraOptions, SpeedOptions

INF = math.inf


def _bank(n: int = 6, r: int = 3, d: int = 4, *, seed0: int = 0, optional: bool = True,
          meta: dict | None = None) -> VolumeBank:
    g = torch.Generator().manual_seed(seed0)
    log_sv = torch.randn(n, r, generator=g, dtype=torch.float64).sort(1, descending=True).values
    log_sv[1, -1] = -INF  # a zero singular value
    return VolumeBank(
        log_sv=log_sv,
        latents=torch.randn(n, d, generator=g) if optional else None,
        seeds=torch.arange(seed0, seed0 + n, dtype=torch.int64) if optional else None,
        labels=torch.arange(n, dtype=torch.int64) % 3 if optional else None,
        meta=meta if meta is not None else {
            "generator_id": "toy", "nested": {"a": [1, 2.5, None], "b": "x"},
            "identity": {"generator_fingerprint": "f00", "method": "exact", "k": None,
                         "proj_dim": None, "latents": {"law": "gaussian", "seed": 0}}})


def _assert_same(a: VolumeBank, b: VolumeBank) -> None:
    for name in ("log_sv", "latents", "seeds", "labels"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name


# ----------------------------------------------------------------------------- format

def test_save_load_round_trip_is_bit_exact_with_meta(tmp_path):
    original = _bank()
    original.save(tmp_path / "b.safetensors")
    loaded = VolumeBank.load(tmp_path / "b.safetensors")
    _assert_same(original, loaded)
    assert loaded.log_sv[1, -1] == -INF
    assert loaded.meta == original.meta
    # optional fields absent -> None after loading
    bare = _bank(optional=False)
    bare.save(tmp_path / "bare.safetensors")
    back = VolumeBank.load(tmp_path / "bare.safetensors")
    assert back.latents is None and back.seeds is None and back.labels is None
    _assert_same(bare, back)


def test_file_declares_format_version_and_tensor_names(tmp_path):
    from safetensors import safe_open
    _bank().save(tmp_path / "b.safetensors")
    with safe_open(str(tmp_path / "b.safetensors"), "pt") as fh:
        header = json.loads(fh.metadata()["magnet_lab"])
        assert set(fh.keys()) == {"log_sv", "latents", "seeds", "labels"}
        assert fh.get_tensor("log_sv").dtype == torch.float64
    assert header["format"] == FORMAT == "magnet_lab.bank/1"
    assert header["meta"]["generator_id"] == "toy"


def test_atomic_save_leaves_no_temporary_files_even_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "b.safetensors"
    _bank(seed0=0).save(path)
    _bank(seed0=1).save(path)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.safetensors"]
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        _bank(seed0=2).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.safetensors"]
    assert path.read_bytes() == before  # the old bank is intact


def test_unserialisable_meta_raises_before_writing(tmp_path):
    bad = _bank(meta={"generator_id": object()})
    with pytest.raises(ValueError, match="JSON"):
        bad.save(tmp_path / "b.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_corrupt_bank_file_raises_value_error_naming_the_path(tmp_path, damage):
    path = tmp_path / "b.safetensors"
    _bank().save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 17])
    else:
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    with pytest.raises(ValueError, match=str(path)):
        VolumeBank.load(path)


def test_foreign_or_future_safetensors_files_are_rejected(tmp_path):
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(st_save({"log_sv": torch.zeros(2, 2, dtype=torch.float64)}))
    with pytest.raises(ValueError, match="not a magnet_lab bank"):
        VolumeBank.load(plain)
    future = tmp_path / "future.safetensors"
    header = json.dumps({"format": "magnet_lab.bank/99", "meta": {}})
    future.write_bytes(st_save({"log_sv": torch.zeros(2, 2, dtype=torch.float64)},
                               metadata={"magnet_lab": header}))
    with pytest.raises(ValueError, match="magnet_lab.bank/99"):
        VolumeBank.load(future)
    extra = tmp_path / "extra.safetensors"
    extra.write_bytes(st_save({"log_sv": torch.zeros(2, 2, dtype=torch.float64),
                               "weights": torch.zeros(3)},
                              metadata={"magnet_lab": json.dumps({"format": FORMAT})}))
    with pytest.raises(ValueError, match="weights"):
        VolumeBank.load(extra)


def test_missing_path_and_unknown_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        VolumeBank.load(tmp_path / "nope.safetensors")
    (tmp_path / "bank.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match=r"unknown bank extension '\.pt'"):
        VolumeBank.load(tmp_path / "bank.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        VolumeBank.load(tmp_path / "empty")


def test_post_init_validation_names_the_problem():
    good = _bank()
    with pytest.raises(TypeError, match="float64"):
        VolumeBank(log_sv=good.log_sv.float())
    nan = good.log_sv.clone()
    nan[0, 0] = math.nan
    with pytest.raises(ValueError, match="1 NaN"):
        VolumeBank(log_sv=nan)
    with pytest.raises(ValueError, match="descending"):
        VolumeBank(log_sv=good.log_sv.flip(1))
    with pytest.raises(ValueError, match="latents must have shape"):
        VolumeBank(log_sv=good.log_sv, latents=good.latents[:-1])
    with pytest.raises(TypeError, match="seeds must be an int64"):
        VolumeBank(log_sv=good.log_sv, seeds=good.seeds.int())
    with pytest.raises(ValueError, match="labels must be >= 0"):
        VolumeBank(log_sv=good.log_sv, labels=-good.labels - 1)
    # -inf rows (zero sigma) are valid
    assert VolumeBank(log_sv=torch.tensor([[0.0, -INF]], dtype=torch.float64)).rank == 2


def test_subset_and_len():
    b = _bank(n=6)
    s = b.subset(torch.tensor([4, 1, 1]))
    assert len(s) == 3 and len(b) == 6
    assert torch.equal(s.log_sv, b.log_sv[[4, 1, 1]]) and torch.equal(s.seeds, b.seeds[[4, 1, 1]])
    mask = b.labels == 0
    assert len(b.subset(mask)) == int(mask.sum())
    s.meta["changed"] = True
    assert "changed" not in b.meta


# ----------------------------------------------------------------------------- authors' npz

class _Booby:
    """Unpickling this sets a flag: proves whether the loader ever unpickles."""

    def __reduce__(self):
        return (_set_unpickled_flag, ())


_UNPICKLED: list[bool] = []


def _set_unpickled_flag():
    _UNPICKLED.append(True)
    return None


def test_authors_npz_loads_with_log_conversion_and_descending_order(tmp_path):
    svds = np.array([[0.5, 3.0, 1.0], [0.0, 2.0, 4.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    latents = np.arange(6, dtype=np.float32).reshape(3, 2)
    labels = np.array([2, 0, 1])
    np.savez(tmp_path / "authors.npz", latents=latents, svds=svds, labels=labels)
    b = VolumeBank.load(tmp_path / "authors.npz")
    with np.errstate(divide="ignore"):
        expected = np.log(np.sort(svds.astype(np.float64), axis=1)[:, ::-1])  # 0 -> -inf
    np.testing.assert_array_equal(b.log_sv.numpy(), expected)
    assert b.log_sv[1, -1] == -INF and b.log_sv.dtype == torch.float64
    np.testing.assert_array_equal(b.latents.numpy(), latents)
    assert b.labels.tolist() == [2, 0, 1] and b.seeds is None
    assert b.meta["method"] == "authors_npz"


def test_authors_npz_missing_svds_lists_present_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", latents=np.zeros((2, 2)), sv=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"missing \['svds'\].*present: \['latents', 'sv'\]"):
        VolumeBank.load(tmp_path / "a.npz")


def test_authors_npz_with_object_array_is_refused_never_unpickled(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = _Booby(), _Booby()
    np.savez(tmp_path / "evil.npz", latents=np.zeros((2, 2)), svds=obj)
    _UNPICKLED.clear()
    with pytest.raises(ValueError, match="allow_pickle=False"):
        VolumeBank.load(tmp_path / "evil.npz")
    assert _UNPICKLED == []


@pytest.mark.parametrize("bad, message", [(-1.0, "1 negative"), (math.nan, "1 NaN")])
def test_authors_npz_invalid_singular_values(tmp_path, bad, message):
    svds = np.ones((2, 2))
    svds[1, 0] = bad
    np.savez(tmp_path / "a.npz", latents=np.zeros((2, 3)), svds=svds)
    with pytest.raises(ValueError, match=message):
        VolumeBank.load(tmp_path / "a.npz")


# ----------------------------------------------------------------------------- merging

def test_merge_of_shards_equals_concatenation_and_directory_load(tmp_path):
    shards = [_bank(n=3, seed0=0), _bank(n=4, seed0=100), _bank(n=2, seed0=200)]
    merged = VolumeBank.merge(shards)
    for name in ("log_sv", "latents", "seeds", "labels"):
        assert torch.equal(getattr(merged, name), torch.cat([getattr(s, name) for s in shards]))
    assert merged.meta["n_shards"] == 3 and merged.meta["shard_sizes"] == [3, 4, 2]
    # written out of order: the directory is read in sorted name order
    for i in (2, 0, 1):
        shards[i].save(tmp_path / shard_name(i))
    from_dir = VolumeBank.load(tmp_path)
    _assert_same(merged, from_dir)
    assert from_dir.meta["n_shards"] == 3
    assert VolumeBank.merge([merged, _bank(n=2, seed0=300)]).meta["n_shards"] == 4


def test_incompatible_merge_names_the_differing_field():
    a = _bank(seed0=0)
    with pytest.raises(ValueError, match="r=2"):
        VolumeBank.merge([a, _bank(r=2, seed0=50)])
    other = _bank(seed0=50)
    other.meta["identity"] = {**a.meta["identity"], "generator_fingerprint": "ba5"}
    with pytest.raises(ValueError, match="generator_fingerprint differs: 'f00' vs 'ba5'"):
        VolumeBank.merge([a, other])
    other = _bank(seed0=50)
    other.meta["identity"] = {**a.meta["identity"], "proj_dim": 64}
    with pytest.raises(ValueError, match="proj_dim differs: None vs 64"):
        VolumeBank.merge([a, other])
    other = _bank(seed0=50)
    other.meta["identity"] = {**a.meta["identity"], "latents": {"law": "gaussian", "seed": 1}}
    with pytest.raises(ValueError, match="latents.seed differs: 0 vs 1"):
        VolumeBank.merge([a, other])
    with pytest.raises(ValueError, match="latents"):
        VolumeBank.merge([a, _bank(seed0=50, d=5)])
    with pytest.raises(ValueError, match="seeds"):
        b = _bank(seed0=50)
        VolumeBank.merge([a, VolumeBank(log_sv=b.log_sv, latents=b.latents, labels=b.labels,
                                        meta=dict(a.meta))])


def test_merge_rejects_duplicate_seeds():
    with pytest.raises(ValueError, match=r"2 seeds occur more than once.*\[4, 5\]"):
        VolumeBank.merge([_bank(n=6, seed0=0), _bank(n=6, seed0=4)])


# ----------------------------------------------------------------------------- build (fake spectra)

@pytest.fixture
def fake_spectra(monkeypatch):
    """A stand-in for spectra.log_singular_values: log σ = sorted log|z|, recording every shard
    it is given."""
    calls: list[torch.Tensor] = []

    def log_singular_values(G, z, options=None, *, speed=None, c=None):
        assert speed.progress is False and c is None
        calls.append(z.clone())
        G(z)
        return z.double().abs().log().sort(1, descending=True).values

    monkeypatch.setattr(magnet_lab.spectra, "log_singular_values", log_singular_values)
    return calls


def test_build_resumes_and_recomputes_only_missing_shards(tmp_path, fake_spectra):
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    seeds = torch.arange(10, dtype=torch.int64)
    out = tmp_path / "bank"
    first = build(lambda x: x, z, out, generator_id="toy", fingerprint="toy", shard_size=4,
                  seeds=seeds, options=SpectraOptions("exact"))
    assert sorted(p.name for p in out.iterdir()) == [shard_name(i) for i in range(3)]
    assert len(fake_spectra) == 3 and first.meta["shards_computed"] == [0, 1, 2]
    assert torch.equal(first.latents, z) and first.meta["n_shards"] == 3
    assert first.meta["spectra_options"]["method"] == "exact"
    assert first.meta["spectra_options"]["proj_dim"] == 128  # defaults recorded
    assert first.meta["speed_options"] == {"chunk": None, "block": None, "memory": None,
                                           "progress": False}
    mtimes = {i: (out / shard_name(i)).stat().st_mtime_ns for i in (0, 2)}
    (out / shard_name(1)).unlink()
    fake_spectra.clear()
    again = build(lambda x: x, z, out, generator_id="toy", fingerprint="toy", shard_size=4,
                  seeds=seeds, options=SpectraOptions("exact"),
                  speed=SpeedOptions(chunk=2, memory=2**20))  # speed only: shards stay valid
    assert len(fake_spectra) == 1 and torch.equal(fake_spectra[0], z[4:8])
    assert again.meta["shards_computed"] == [1]
    assert {i: (out / shard_name(i)).stat().st_mtime_ns for i in (0, 2)} == mtimes
    _assert_same(first, again)
    _assert_same(first, VolumeBank.load(out))


def test_build_refuses_mismatched_existing_shards(tmp_path, fake_spectra):
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    out = tmp_path / "bank"
    build(lambda x: x, z, out, generator_id="toy", fingerprint="toy", shard_size=4)
    with pytest.raises(ValueError, match="latents.sha256 differs"):
        build(lambda x: x, z + 1, out, generator_id="toy", fingerprint="toy", shard_size=4)
    with pytest.raises(ValueError, match="generator_fingerprint differs: 'toy' vs 'other'"):
        build(lambda x: x, z, out, generator_id="toy", fingerprint="other", shard_size=4)
    with pytest.raises(ValueError, match="method differs: 'exact' vs 'projected'"):
        build(lambda x: x, z, out, generator_id="toy", fingerprint="toy", shard_size=4,
              options=SpectraOptions("projected"))
    with pytest.raises(ValueError, match="precision differs: 'highest' vs 'bf16'"):
        build(lambda x: x, z, out, generator_id="toy", fingerprint="toy", shard_size=4,
              options=SpectraOptions(precision="bf16"))  # reduced precision: another bank
    with pytest.raises(ValueError, match="not part of this build"):
        build(lambda x: x, z, out, generator_id="toy", fingerprint="toy", shard_size=8)
    with pytest.raises(TypeError):
        build(lambda x: x, z, tmp_path / "b2", generator_id="toy", fingerprint="toy",
              options={"method": "exact"})  # options are a SpectraOptions, not a dict
    with pytest.raises(ValueError, match="not an nn.Module"):
        build(lambda x: x, z, tmp_path / "b3", generator_id="toy")


# ----------------------------------------------------------------------------- build (real spectra)

def test_build_with_real_spectra_on_a_tiny_relu_generator(tmp_path):
    spectra = pytest.importorskip("magnet_lab.spectra")
    assert hasattr(spectra, "log_singular_values")
    g = torch.Generator().manual_seed(0)
    W1 = torch.randn(8, 3, generator=g, dtype=torch.float64)
    W2 = torch.randn(5, 8, generator=g, dtype=torch.float64)
    calls = [0]

    def G(z):  # a CPA map R^3 -> R^5
        calls[0] += 1
        return torch.relu(z @ W1.T) @ W2.T

    z = torch.randn(12, 3, generator=g, dtype=torch.float64)
    out = tmp_path / "bank"
    first = build(G, z, out, generator_id="tiny-relu", fingerprint="relu", shard_size=4,
                  options=SpectraOptions("exact"))
    calls_full = calls[0]
    # closed form: J = W2 diag(1[W1 z > 0]) W1 on each latent's region; a region where fewer
    # than 3 units are active has a rank-deficient J: its numerically-zero σ must read -inf
    n_deficient = 0
    for i in range(12):
        J = W2 @ torch.diag((W1 @ z[i] > 0).double()) @ W1
        sv = torch.linalg.svdvals(J)
        zero = sv < 1e-12 * sv[0]
        n_deficient += int(zero.any())
        assert (first.log_sv[i][zero] < math.log(1e-12 * sv[0])).all()
        torch.testing.assert_close(first.log_sv[i][~zero], sv[~zero].log(), rtol=1e-9, atol=1e-9)
    assert n_deficient > 0  # the fixture exercises the -inf path through save/merge
    (out / shard_name(2)).unlink()
    calls[0] = 0
    again = build(G, z, out, generator_id="tiny-relu", fingerprint="relu", shard_size=4,
                  options=SpectraOptions("exact"))
    assert calls[0] > 0 and calls_full == 3 * calls[0]  # one shard's worth of G calls
    assert again.meta["shards_computed"] == [2]
    _assert_same(first, again)


def test_authors_npz_with_batch_axes_and_unfilled_rows_loads_like_their_loader(tmp_path):
    """The released files keep [shards, batch, r] axes and zero rows for unfilled slots; the
    authors' loader flattens leading axes and drops all-zero rows, and so must we."""
    rng = np.random.default_rng(0)
    svds = np.sort(rng.uniform(0.1, 3.0, size=(2, 3, 4)), axis=-1)[..., ::-1].copy()  # [2, 3, 4]
    latents = rng.standard_normal((2, 3, 5)).astype(np.float32)  # [2, 3, 5]
    svds[1, 2] = 0.0  # an unfilled slot
    np.savez(tmp_path / "released.npz", svds=svds, latents=latents)
    with pytest.warns(UserWarning, match="dropping 1 all-zero rows"):
        bank = VolumeBank.load(tmp_path / "released.npz")
    assert len(bank) == 5 and bank.meta["npz_rows_dropped"] == 1
    np.testing.assert_array_equal(bank.latents.numpy(), latents.reshape(-1, 5)[:5])
    np.testing.assert_allclose(bank.log_sv.numpy(), np.log(svds.reshape(-1, 4)[:5]), rtol=0,
                               atol=1e-15)


def test_scale_out_workers_write_disjoint_shards_and_load_checks_coverage(tmp_path):
    """Two workers on the same z and path own alternate shards; the directory loads only once
    every shard exists, and then equals a single-process build."""
    W = torch.randn(5, 3, dtype=torch.float64)
    G = lambda z: z @ W.T  # noqa: E731
    z = torch.randn(10, 3, dtype=torch.float64)
    part = build(G, z, tmp_path / "b", generator_id="lin", fingerprint="lin", shard_size=3, worker=(0, 2))
    assert part.meta["shards_computed"] == [0, 2] and len(part) == 6
    with pytest.raises(ValueError, match=r"missing rows \[3, 6\)"):
        VolumeBank.load(tmp_path / "b")
    build(G, z, tmp_path / "b", generator_id="lin", fingerprint="lin", shard_size=3, worker=(1, 2))
    full = build(G, z, tmp_path / "single", generator_id="lin", fingerprint="lin", shard_size=3)
    merged = VolumeBank.load(tmp_path / "b")
    assert torch.equal(merged.log_sv, full.log_sv) and torch.equal(merged.latents, z)
    with pytest.raises(ValueError, match="worker must be"):
        build(G, z, tmp_path / "c", generator_id="lin", fingerprint="lin", shard_size=3, worker=(2, 2))


def test_conditional_build_runs_g_on_one_hot_labels_and_keys_the_identity_on_them(tmp_path):
    """n_classes: each shard's spectra come from G(z, one_hot(labels)) (checked against the
    exact Jacobian in z by autograd), labels are stored, and other labels are another bank."""
    g = torch.Generator().manual_seed(3)
    W, E = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(
        3, 3, generator=g, dtype=torch.float64)

    def G(z, c):  # [B, 3], [B, 3] -> [B, 6]: the class scales and shifts the hidden units
        return torch.tanh((z * (1 + c @ E.abs())) @ W.T + c.sum(1, keepdim=True))

    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    vb = build(G, z, tmp_path / "cond", generator_id="cond", fingerprint="cond", shard_size=3,
               n_classes=3, labels=labels)
    assert torch.equal(vb.labels, labels) and vb.meta["identity"]["n_classes"] == 3
    for i in range(7):
        c = torch.nn.functional.one_hot(labels[i:i + 1], 3).double()
        J = torch.autograd.functional.jacobian(lambda x: G(x[None], c)[0], z[i])  # [6, 3]
        torch.testing.assert_close(vb.log_sv[i], torch.linalg.svdvals(J).log(), rtol=0,
                                   atol=1e-10)
    with pytest.raises(ValueError, match="labels_sha256 differs"):
        build(G, z, tmp_path / "cond", generator_id="cond", fingerprint="cond", shard_size=3,
              n_classes=3, labels=labels.roll(1))
    with pytest.raises(ValueError, match="needs labels"):
        build(G, z, tmp_path / "c2", generator_id="cond", fingerprint="cond", n_classes=3)
