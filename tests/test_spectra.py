"""magnet_lab.spectra against closed forms in float64: linear maps, autograd Jacobians."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from magnet_lab.spectra import (MEMORY_ENV, clear_projection_cache, jacobian,
                                log_singular_values, memory_budget, memory_plan,
                                projection_matrix)

F64 = torch.float64


def _gaussian(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _matrix_with_spectrum(sv: list[float], D: int, seed: int) -> torch.Tensor:
    """W = U diag(sv) Vᵀ, [D, len(sv)], with random orthonormal U, V."""
    U = torch.linalg.qr(_gaussian(D, len(sv), seed=seed)).Q
    V = torch.linalg.qr(_gaussian(len(sv), len(sv), seed=seed + 1)).Q
    return U @ torch.diag(torch.tensor(sv, dtype=F64)) @ V.T


def _linear(W: torch.Tensor, out_shape: tuple[int, ...] | None = None):
    """G(z) = W z + b, output reshaped to [B, *out_shape]; runs in z's dtype."""
    b = _gaussian(W.shape[0], seed=99)

    def G(z: torch.Tensor) -> torch.Tensor:
        x = z @ W.T.to(z.dtype) + b.to(z.dtype)  # [B, D]
        return x if out_shape is None else x.reshape(len(z), *out_shape)
    return G


def _mlp(d: int, D: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.LeakyReLU(0.2),
                              torch.nn.Linear(32, 32), torch.nn.LeakyReLU(0.2),
                              torch.nn.Linear(32, D))
    return net.to(F64).eval()


def _log_svd(M: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.linalg.svdvals(M.to(F64)))


@pytest.mark.parametrize("D, d, out_shape", [(24, 7, None), (5, 12, None), (48, 6, (3, 4, 4))])
def test_exact_linear_equals_log_svd_of_W(D, d, out_shape):
    W = _gaussian(D, d, seed=1)
    z = _gaussian(4, d, seed=2)
    log_sv = log_singular_values(_linear(W, out_shape), z, progress=False)
    assert log_sv.shape == (4, min(D, d)) and log_sv.dtype == F64 and log_sv.device.type == "cpu"
    torch.testing.assert_close(log_sv, _log_svd(W).expand(4, -1), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spectrum", [
    [10.0, 7.0, 5.0] + [1.0 / (1 + j) for j in range(37)],  # clear gap after the top 3
    [1.0 / math.sqrt(1 + j) for j in range(40)],             # slowly decaying
])
def test_topk_linear_top3_within_relative_tolerance(spectrum):
    # Stated tolerance: with tol=1e-6 and oversample=10 the top-3 σ have relative error < 1e-6.
    W = _matrix_with_spectrum(spectrum, D=60, seed=3)
    z = _gaussian(3, 40, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "did not settle" warning
        log_sv = log_singular_values(_linear(W), z, method="topk", k=3, tol=1e-6, progress=False)
    rel = (log_sv - torch.log(torch.tensor(spectrum[:3], dtype=F64))).exp() - 1
    assert log_sv.shape == (3, 3)
    assert rel.abs().max() < 1e-6


def test_topk_mlp_matches_exact_top3():
    net, z = _mlp(10, 30), _gaussian(4, 10, seed=5)
    exact = log_singular_values(net, z, progress=False)
    topk = log_singular_values(net, z, method="topk", k=3, oversample=2, tol=1e-10,
                               progress=False)
    torch.testing.assert_close(topk, exact[:, :3], atol=1e-8, rtol=0)


def test_topk_top30_to_1e6_in_fewer_products_than_subspace_iteration_could(monkeypatch):
    """Block Lanczos: the top-30 σ of a linear map (d = 200, σ_j = 0.95^j, slowly decaying)
    within 1e-6 relative of the closed form in fewer JVP + VJP products than the block subspace
    iteration it replaced needed at its earliest stop (k + oversample = 40 directions: 40 JVPs
    for the range, then two sweeps of 40 VJPs + 40 JVPs before a first comparison = 160)."""
    from magnet_lab import spectra

    counts = {"jvp": 0, "vjp": 0}
    jvps, vjps = spectra._jvps, spectra._vjps

    def counting(kind, fn):
        def wrapped(*args):
            counts[kind] += args[-2]  # n: directions pushed per latent
            return fn(*args)
        return wrapped

    monkeypatch.setattr(spectra, "_jvps", counting("jvp", jvps))
    monkeypatch.setattr(spectra, "_vjps", counting("vjp", vjps))
    sv = [0.95 ** j for j in range(200)]
    W = _matrix_with_spectrum(sv, D=300, seed=21)
    log_sv = log_singular_values(_linear(W), _gaussian(1, 200, seed=22), method="topk", k=30,
                                 tol=1e-4, progress=False)
    rel = (log_sv - torch.log(torch.tensor(sv[:30], dtype=F64))).exp() - 1
    assert rel.abs().max() < 1e-6
    assert counts["jvp"] == counts["vjp"] and counts["jvp"] + counts["vjp"] < 160


def test_topk_warns_when_max_iter_too_small():
    W = _matrix_with_spectrum([0.98 ** j for j in range(40)], D=60, seed=6)
    with pytest.warns(RuntimeWarning, match="did not settle"):
        log_singular_values(_linear(W), _gaussian(2, 40, seed=7), method="topk", k=3,
                            oversample=1, tol=1e-12, max_iter=3, progress=False)


@pytest.mark.parametrize("D, d, proj_dim", [(40, 8, 16), (40, 20, 6)])
def test_projected_linear_equals_log_svd_of_PW(D, d, proj_dim):
    W = _gaussian(D, d, seed=8)
    z = _gaussian(3, d, seed=9)
    log_sv = log_singular_values(_linear(W), z, method="projected", proj_dim=proj_dim, seed=11,
                                 progress=False)
    P = projection_matrix(D, proj_dim, seed=11)
    assert log_sv.shape == (3, min(proj_dim, d))
    torch.testing.assert_close(log_sv, _log_svd(P @ W).expand(3, -1), atol=1e-10, rtol=0)


def test_projected_top_k_keeps_leading_values():
    W, z = _gaussian(40, 8, seed=8), _gaussian(2, 8, seed=9)
    full = log_singular_values(_linear(W), z, method="projected", proj_dim=16, progress=False)
    top = log_singular_values(_linear(W), z, method="projected", proj_dim=16, k=3,
                              progress=False)
    assert torch.equal(top, full[:, :3])


def test_projection_matrix_rows_orthonormal_and_seeded():
    P = projection_matrix(50, 12, seed=0)
    assert P.shape == (12, 50) and P.dtype == F64
    torch.testing.assert_close(P @ P.T, torch.eye(12, dtype=F64), atol=1e-12, rtol=0)
    assert torch.equal(P, projection_matrix(50, 12, seed=0))
    assert (P - projection_matrix(50, 12, seed=1)).abs().max() > 0.1


def test_projection_matrix_is_the_sign_fixed_householder_q_and_cached():
    """CholeskyQR2 gives the thin Q with R's diagonal positive, i.e. the Householder Q with the
    signs of diag(R) folded in (what the Keras initializer draws), to rounding; the same call
    returns the cached tensor and another dtype is the float64 P cast."""
    clear_projection_cache()
    D, p = 3000, 40
    A = torch.randn(D, p, generator=torch.Generator().manual_seed(5), dtype=F64)
    Q, R = torch.linalg.qr(A)
    want = (Q * torch.sign(torch.diagonal(R))).T  # [p, D]
    P = projection_matrix(D, p, seed=5)
    torch.testing.assert_close(P, want, atol=1e-13, rtol=0)
    assert projection_matrix(D, p, seed=5) is P
    P32 = projection_matrix(D, p, seed=5, dtype=torch.float32)
    assert P32.dtype == torch.float32 and torch.equal(P32, P.float())
    clear_projection_cache()
    fresh = projection_matrix(D, p, seed=5)
    assert fresh is not P and torch.equal(fresh, P)


def test_precision_highest_float32_and_bf16_against_the_float64_closed_form():
    """On a linear G the float64 log σ are the closed form; float32 at "highest" is within
    float32 rounding, bf16 autocast is measurably coarser but bounded (bf16 has 8 mantissa bits:
    relative error ~ 2⁻⁸ per product), and "tf32" on the CPU (no TF32 units) equals "highest"."""
    sv = [4.0, 2.0, 1.0, 0.5, 0.25]
    W = _matrix_with_spectrum(sv, 64, seed=3)
    G, z = _linear(W), _gaussian(6, 5, seed=4)
    want = torch.log(torch.tensor(sv, dtype=F64)).expand(6, -1)
    highest = log_singular_values(G, z.float(), progress=False)
    bf16 = log_singular_values(G, z.float(), progress=False, precision="bf16")
    tf32 = log_singular_values(G, z.float(), progress=False, precision="tf32")
    err_hi, err_bf = (highest - want).abs().max(), (bf16 - want).abs().max()
    assert err_hi < 1e-5
    assert 1e-4 < err_bf < 0.05
    assert torch.equal(tf32, highest)


def test_precision_switches_tf32_off_for_the_call_and_restores_the_flags():
    """torch allows TF32 cuDNN convolutions by default; "highest" runs G with TF32 off, "tf32"
    with it on, and the user's flags come back afterwards (also after an error)."""
    seen = []

    def G(z: torch.Tensor) -> torch.Tensor:
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return torch.cat([z, z ** 2], 1)

    z = _gaussian(3, 2, seed=0).float()
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    log_singular_values(G, z, progress=False)
    assert seen and set(seen) == {(False, False)}
    seen.clear()
    log_singular_values(G, z, progress=False, precision="tf32")
    assert set(seen) == {(True, True)}
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
    with pytest.raises(ValueError, match="float32 option"):
        log_singular_values(G, z.double(), progress=False, precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        log_singular_values(G, z, progress=False, precision="fp8")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_exact_mlp_equals_autograd_jacobian_svd():
    net, z = _mlp(6, 20), _gaussian(5, 6, seed=12)
    J_ref = torch.stack([torch.autograd.functional.jacobian(lambda x: net(x[None])[0], zi)
                         for zi in z])  # [B, D, d]
    torch.testing.assert_close(jacobian(net, z, progress=False), J_ref, atol=1e-12, rtol=0)
    log_sv = log_singular_values(net, z, progress=False)
    torch.testing.assert_close(log_sv, _log_svd(J_ref), atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", ["exact", "projected", "topk"])
def test_chunking_does_not_change_results(method):
    net, z = _mlp(6, 20), _gaussian(7, 6, seed=13)
    # topk: 5 = 3 + 2 of 6 directions, so the iteration (and each latent's stop) matters
    kw = dict(method=method, k=3 if method == "topk" else None, oversample=2, tol=1e-8,
              proj_dim=8, progress=False)
    runs = [log_singular_values(net, z, chunk=c, block=b, **kw)
            for c, b in [(None, None), (1, 1), (3, 2), (None, 3), (2, None)]]
    plan = memory_plan(net, z, memory=120_000, **{k: v for k, v in kw.items() if k != "progress"})
    assert plan.chunk * plan.block < len(z) * 8  # the small budget really splits the work
    runs.append(log_singular_values(net, z, memory=120_000, **kw))
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], atol=1e-12, rtol=0)


def test_cpu_plan_caps_chunk_to_cache_sized_calls(monkeypatch):
    """On a CPU the budget's chunk is capped so chunk·block·(bytes per direction) stays near
    _CPU_CALL_BYTES (big vmapped calls ran ~2× slower), down to 1 latent; a given chunk wins and
    results do not change (test_chunking_does_not_change_results)."""
    from magnet_lab import spectra

    net, z = _mlp(6, 20), _gaussian(64, 6, seed=13)
    free = memory_plan(net, z)
    assert free.chunk == 64  # the whole batch fits the budget
    monkeypatch.setattr(spectra, "_CPU_CALL_BYTES", 40 * free.block * free.per_direction)
    assert memory_plan(net, z).chunk == 40
    monkeypatch.setattr(spectra, "_CPU_CALL_BYTES", 1)
    assert memory_plan(net, z).chunk == 1
    assert memory_plan(net, z, chunk=64).chunk == 64


def test_cpu_plan_runs_big_reverse_mode_rows_as_plain_vjps(monkeypatch):
    """On a CPU, reverse mode with big rows (>= _CPU_PLAIN_VJP_BYTES a direction) runs block 1,
    plain VJPs without vmap, over chunks holding _CPU_VJP_CALL_BYTES of rows; small rows, forward
    mode and a given block or chunk are left alone; results do not change."""
    from magnet_lab import spectra

    net, z = _mlp(6, 20), _gaussian(8, 6, seed=15)
    kw = dict(method="projected", proj_dim=6)  # d = proj_dim: 6 VJPs a latent
    free = memory_plan(net, z, **kw)
    assert (free.chunk, free.block) == (8, 6)  # a tiny net's rows stay vmapped
    ref = log_singular_values(net, z, progress=False, **kw)
    monkeypatch.setattr(spectra, "_CPU_PLAIN_VJP_BYTES", 1)
    monkeypatch.setattr(spectra, "_CPU_VJP_CALL_BYTES", 3 * free.per_direction)
    plan = memory_plan(net, z, **kw)
    assert (plan.chunk, plan.block) == (3, 1)
    assert memory_plan(net, z, block=4, **kw).block == 4
    assert (memory_plan(net, z, chunk=5, **kw).chunk, memory_plan(net, z, chunk=5, **kw).block) \
        == (5, 1)
    assert memory_plan(net, z, method="exact").block == 6  # D > d: 6 JVPs, forward mode
    torch.testing.assert_close(log_singular_values(net, z, progress=False, **kw), ref,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("D, d", [(20, 6), (4, 9)])
def test_forward_and_reverse_jacobians_agree(D, d):
    net, z = _mlp(d, D), _gaussian(3, d, seed=14)
    J_fwd = jacobian(net, z, mode="forward", chunk=2, progress=False)
    J_rev = jacobian(net, z, mode="reverse", block=3, progress=False)
    assert J_fwd.shape == (3, D, d)
    torch.testing.assert_close(J_fwd, J_rev, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["exact", "projected", "topk"])
def test_float32_run_close_to_float64_and_returns_float64(method):
    net, z = _mlp(6, 20), _gaussian(4, 6, seed=15)
    kw = dict(method=method, k=3 if method == "topk" else None, proj_dim=8, tol=1e-5,
              progress=False)
    ref = log_singular_values(net, z, **kw)
    out = log_singular_values(net.float(), z, dtype=torch.float32, **kw)
    assert out.dtype == F64 and ref.dtype == F64
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    assert (out - ref).abs().max() > 0  # really ran in float32


@pytest.mark.parametrize("method", ["exact", "projected"])
def test_rank_deficient_map_gives_minus_inf_not_nan(method):
    W = _matrix_with_spectrum([3.0, 2.0, 1.0, 0.0], D=10, seed=16)
    log_sv = log_singular_values(_linear(W), _gaussian(2, 4, seed=17), method=method,
                                 proj_dim=6, progress=False)
    assert not torch.isnan(log_sv).any()
    assert torch.isneginf(log_sv[:, -1]).all() and torch.isfinite(log_sv[:, :-1]).all()


def test_zero_jacobian_gives_all_minus_inf():
    log_sv = log_singular_values(lambda z: torch.zeros(len(z), 5, dtype=z.dtype),
                                 _gaussian(2, 3, seed=18), progress=False)
    assert torch.isneginf(log_sv).all()


_G = _linear(_gaussian(10, 4, seed=19))
_Z = _gaussian(3, 4, seed=20)


def _blows_up_at_second(z):
    """[B, 8]: all 8 outputs of latent 1 are NaN/inf (division by zero), the others finite."""
    return z.repeat(1, 2) / (z[:, :1] - _Z[1, 0])


@pytest.mark.parametrize("G, z, kw, err, match", [
    (_G, _Z[0], {}, ValueError, r"shape \[B, d\]"),
    (_G, torch.tensor([[0.0, float("nan"), 0, 0]], dtype=F64), {}, ValueError, "1 NaN"),
    (_G, torch.tensor([[0.0, float("inf"), 0, 0]], dtype=F64), {}, ValueError, "1 inf"),
    (_blows_up_at_second, _Z, {"chunk": 1}, ValueError, r"8 non-finite .* latent indices \[1\]"),
    (lambda z: z[:1].repeat(1, 3), _Z, {}, ValueError, "batch dimension: 3 latent"),
    (lambda z: 1.0, _Z, {}, TypeError, "must return a torch.Tensor"),
    (_G, _Z, {"k": 5}, ValueError, r"k=5 exceeds the rank bound min\(D, d\)"),
    (_G, _Z, {"k": 0}, ValueError, "k must be >= 1, got k=0"),
    (_G, _Z, {"method": "topk", "k": 5}, ValueError, r"k=5 exceeds"),
    (_G, _Z, {"method": "topk"}, ValueError, "needs k"),
    (_G, _Z, {"method": "projected", "proj_dim": 3, "k": 4}, ValueError,
     r"min\(proj_dim, d\) = min\(3, 4\)"),
    (_G, _Z, {"method": "projected", "proj_dim": 0}, ValueError, "proj_dim must be >= 1"),
    (_G, _Z, {"method": "projected", "proj_dim": 11}, ValueError, "proj_dim=11 exceeds .* D=10"),
    (_G, _Z, {"method": "svd"}, ValueError, "unknown method 'svd'"),
    (_G, _Z, {"chunk": 0}, ValueError, "chunk must be >= 1, got chunk=0"),
    (_G, _Z, {"method": "topk", "k": 2, "tol": 0.0}, ValueError, "tol > 0"),
    (_G, _Z, {"method": "projected", "proj_dim": 8.0}, TypeError,
     r"proj_dim must be an integer, got 8.0 \(float\)"),
    (_G, _Z, {"proj_dim": True}, TypeError, "proj_dim must be an integer, got True"),
    (_G, _Z, {"method": "topk", "k": 2, "max_iter": 2.5}, TypeError, "max_iter must be an int"),
    (_mlp(40, 60), torch.zeros(2, 40, dtype=F64), {"method": "topk", "k": 20, "max_iter": 2},
     ValueError, "cannot hold k=20"),
    (_G, _Z, {"method": "topk", "k": 2, "oversample": "3"}, TypeError, "oversample must be an"),
    (_G, _Z, {"method": "topk", "k": 2, "oversample": -1}, ValueError, "oversample must be >= 0"),
    (_G, _Z, {"k": 2.0}, TypeError, "k must be an integer, got 2.0"),
    (_G, _Z, {"block": 1.5}, TypeError, "block must be an integer"),
    (_G, _Z, {"memory": 0}, ValueError, "memory must be >= 1"),
    (_G, _Z, {"memory": 1e9}, TypeError, "memory must be an integer"),
    (_G, _Z, {"method": "topk", "k": 2, "tol": "1e-6"}, TypeError, "tol must be a real number"),
    (_G, torch.zeros(3, 4, device="meta"), {}, ValueError, "z is on the meta device"),
    (_mlp(4, 6).to("meta"), _Z, {}, ValueError, r"z is on cpu but G's parameters .*\['meta'\]"),
])
def test_bad_input_raises_naming_the_problem(G, z, kw, err, match):
    with pytest.raises(err, match=match):
        log_singular_values(G, z, progress=False, **kw)


def test_bad_mode_and_projection_sizes_raise():
    with pytest.raises(ValueError, match="unknown mode 'sideways'"):
        jacobian(_G, _Z, mode="sideways")
    with pytest.raises(ValueError, match="proj_dim=20 exceeds the output dimension D=10"):
        projection_matrix(10, 20, seed=0)


def test_training_mode_module_warns():
    net = _mlp(4, 6).train()
    with pytest.warns(UserWarning, match="training mode"):
        log_singular_values(net, _Z, progress=False)


def test_progress_bar_follows_argument_and_environment(monkeypatch, capsys):
    monkeypatch.setenv("MAGNET_LAB_PROGRESS", "0")
    log_singular_values(_G, _Z)
    assert "latent" not in capsys.readouterr().err
    log_singular_values(_G, _Z, progress=True)
    assert "log_sv[exact]" in capsys.readouterr().err
    monkeypatch.setenv("MAGNET_LAB_PROGRESS", "1")
    log_singular_values(_G, _Z, progress=False)
    assert "latent" not in capsys.readouterr().err


def test_memory_budget_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    assert memory_budget("cpu") == 2 << 30
    for text, expected in [("512MiB", 512 << 20), ("3G", 3 << 30), ("1.5 GiB", 3 << 29),
                           ("1000", 1000)]:
        monkeypatch.setenv(MEMORY_ENV, text)
        assert memory_budget("cpu") == expected
    assert memory_budget("cpu", memory=12345) == 12345  # the argument wins
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match="MAGNET_LAB_SPECTRA_MEMORY='lots' is not a memory size"):
        log_singular_values(_mlp(4, 6), _Z, progress=False)


@pytest.mark.parametrize("method", ["exact", "projected", "topk"])
def test_plan_estimate_fits_budget_and_shrinks_with_it(method):
    net, z = _mlp(6, 20), _gaussian(64, 6, seed=21)
    kw = dict(method=method, k=3 if method == "topk" else None, proj_dim=8)
    big, small = (memory_plan(net, z, memory=m, **kw) for m in (1 << 24, 100_000))
    for plan in (big, small):
        assert plan.per_direction > 0 and plan.per_latent > 0
        assert plan.estimate <= plan.budget
    assert big.chunk == 64 and small.chunk * small.block < big.chunk * big.block
    given = memory_plan(net, z, chunk=5, block=2, **kw)  # the user's sizes win, no probe
    assert (given.chunk, given.block, given.per_direction) == (5, 2, 0)


class _RefuseLargeBatches(TorchDispatchMode):
    """A fake allocator for ``_mlp``: a hidden activation ``[n, 32]`` of more than ``max_batch``
    rows raises the CPU allocator's out-of-memory error. Under vmap n is latents × directions;
    tensors shaped like G's weights (or their transposes) are exempt."""

    def __init__(self, max_batch: int, G: torch.nn.Module) -> None:
        super().__init__()
        self.max_batch, self.refused = max_batch, 0
        self.weight_shapes = {s for p in G.parameters() for s in (p.shape, p.shape[::-1])}

    def _refuses(self, t: object) -> bool:
        return (isinstance(t, torch.Tensor) and t.ndim == 2 and t.shape[-1] == 32
                and t.shape[0] > self.max_batch and t.shape not in self.weight_shapes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(self._refuses(t) for t in tree_leaves(out)):
            self.refused += 1
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 1073741824 bytes.")
        return out


@pytest.mark.parametrize("method", ["exact", "projected", "topk"])
def test_out_of_memory_retries_with_smaller_sizes_and_matches_reference(method):
    net, z = _mlp(6, 20), _gaussian(7, 6, seed=22)
    kw = dict(method=method, k=3 if method == "topk" else None, oversample=2, tol=1e-8,
              proj_dim=8, progress=False)
    ref = log_singular_values(net, z, chunk=1, block=1, **kw)
    # more than 6 latent-directions (or latents) in one op are refused, so chunk=7, block=8
    # fails and is halved down to block 1, then to chunk 3
    with _RefuseLargeBatches(6, net) as refuse, pytest.warns(RuntimeWarning,
                                                              match="finished with chunk="):
        out = log_singular_values(net, z, chunk=7, block=8, **kw)
    assert refuse.refused > 0 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def test_out_of_memory_at_one_latent_one_direction_and_other_errors_propagate():
    net, z = _mlp(6, 20), _gaussian(3, 6, seed=23)
    with _RefuseLargeBatches(0, net), pytest.raises(RuntimeError, match="can't allocate memory"):
        log_singular_values(net, z, chunk=1, block=1, progress=False)

    def broken(x):
        raise RuntimeError("shape mismatch in layer 3")
    calls = []
    with pytest.raises(RuntimeError, match="shape mismatch"):
        log_singular_values(lambda x: broken(x) if calls else calls.append(1) or net(x), z,
                            chunk=3, block=6, progress=False)


def test_default_1024_latent_dcgan_shard_plan_fits_budget_and_rss_stays_bounded():
    """The default bank shard (1024 float32 latents, projected) on the embedded DCGAN: the plan
    fits the default 2 GiB budget (before this budget, one chunk of all 1024 latents × 128
    directions needed ~49 GB); a subprocess running two chunks at a 256 MiB budget grows its
    peak RSS by less than 2 × that budget (measured ~1.0 × alone; allocator slack under load)."""
    import magnet_lab
    G = magnet_lab.load_generator("fmnist-dcgan")
    z = torch.randn(1024, G.z_dim, generator=torch.Generator().manual_seed(0))
    plan = memory_plan(G, z, method="projected")
    assert plan.budget == memory_budget("cpu") and plan.estimate <= plan.budget
    # d = 32 < proj_dim = 128: P·J comes from the 32 JVPs of J (forward mode), all in one block
    assert plan.block == G.z_dim and 1 <= plan.chunk < 1024
    assert 1024 * G.z_dim * plan.per_direction > 2 * plan.budget  # one chunk would not fit

    script = textwrap.dedent("""
        import sys, torch
        import magnet_lab
        from magnet_lab.spectra import log_singular_values, memory_plan
        torch.set_num_threads(1)
        G = magnet_lab.load_generator("fmnist-dcgan")
        z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(0))
        budget = 256 << 20
        chunk = memory_plan(G, z, method="projected", memory=budget).chunk
        log_singular_values(G, z[:2], method="projected", progress=False, chunk=1, block=16)
        kib = lambda key: int(next(l.split()[1] for l in open("/proc/self/status")
                                   if l.startswith(key)))
        before = kib("VmRSS:") << 10
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        out = log_singular_values(G, z[:2 * chunk], method="projected", progress=False,
                                  memory=budget)
        grown = (kib("VmHWM:") << 10) - before
        assert out.shape == (2 * chunk, 32) and bool(torch.isfinite(out[:, 0]).all())
        print(grown / budget)
    """)
    env = dict(os.environ, MAGNET_LAB_PROGRESS="0")
    env.pop(MEMORY_ENV, None)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ratio = float(run.stdout.strip().splitlines()[-1])
    assert 0 < ratio < 2.0
