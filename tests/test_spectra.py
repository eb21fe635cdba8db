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

from magnet_lab import spectra
from magnet_lab.spectra import (MEMORY_ENV, SpectraOptions, SpeedOptions, clear_projection_cache,
                                jacobian, log_singular_values, memory_budget, memory_plan,
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


def _split(kw: dict) -> tuple[SpectraOptions, SpeedOptions]:
    """The keyword arguments of a test case as (SpectraOptions, SpeedOptions)."""
    speed = {k: kw.pop(k) for k in ("chunk", "block", "memory", "progress") if k in kw}
    return SpectraOptions(**kw), SpeedOptions(**speed)


def lsv(G, z: torch.Tensor, c: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """``log_singular_values`` with the options of a test case given as keywords."""
    options, speed = _split(kw)
    return log_singular_values(G, z, options, speed=speed, c=c)


def plan_of(G, z: torch.Tensor, **kw) -> spectra.MemoryPlan:
    """``memory_plan`` with the options of a test case given as keywords."""
    options, speed = _split(kw)
    return memory_plan(G, z, options, speed=speed)


def jac(G, z: torch.Tensor, mode: str = "auto", **kw) -> torch.Tensor:
    """``jacobian`` with the speed options given as keywords."""
    return jacobian(G, z, mode=mode, speed=SpeedOptions(**kw))


def _log_svd(M: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.linalg.svdvals(M.to(F64)))


@pytest.mark.parametrize("D, d, out_shape", [(24, 7, None), (5, 12, None), (48, 6, (3, 4, 4))])
def test_exact_linear_equals_log_svd_of_W(D, d, out_shape):
    W = _gaussian(D, d, seed=1)
    z = _gaussian(4, d, seed=2)
    log_sv = lsv(_linear(W, out_shape), z, progress=False)
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
        log_sv = lsv(_linear(W), z, method="topk", k=3, tol=1e-6, progress=False)
    rel = (log_sv - torch.log(torch.tensor(spectrum[:3], dtype=F64))).exp() - 1
    assert log_sv.shape == (3, 3)
    assert rel.abs().max() < 1e-6


def test_topk_mlp_matches_exact_top3():
    net, z = _mlp(10, 30), _gaussian(4, 10, seed=5)
    exact = lsv(net, z, progress=False)
    topk = lsv(net, z, method="topk", k=3, oversample=2, tol=1e-10,
                               progress=False)
    torch.testing.assert_close(topk, exact[:, :3], atol=1e-8, rtol=0)


def test_topk_top30_to_1e6_in_fewer_products_than_subspace_iteration_could(monkeypatch):
    """Block Lanczos: the top-30 σ of a linear map (d = 200, σ_j = 0.95^j, slowly decaying)
    within 1e-6 relative of the closed form in fewer JVP + VJP products than the block subspace
    iteration it replaced needed at its earliest stop (k + oversample = 40 directions: 40 JVPs
    for the range, then two sweeps of 40 VJPs + 40 JVPs before a first comparison = 160)."""
    sv = [0.95 ** j for j in range(200)]
    W = _matrix_with_spectrum(sv, D=300, seed=21)
    with spectra.count_products() as counts:
        log_sv = lsv(_linear(W), _gaussian(1, 200, seed=22), method="topk", k=30, tol=1e-4,
                     progress=False)
    rel = (log_sv - torch.log(torch.tensor(sv[:30], dtype=F64))).exp() - 1
    assert rel.abs().max() < 1e-6
    assert counts.jvp == counts.vjp and 0 < counts.total < 160


def test_topk_warns_when_max_iter_too_small():
    W = _matrix_with_spectrum([0.98 ** j for j in range(40)], D=60, seed=6)
    with pytest.warns(RuntimeWarning, match="did not settle"):
        lsv(_linear(W), _gaussian(2, 40, seed=7), method="topk", k=3,
                            oversample=1, tol=1e-12, max_iter=3, progress=False)


@pytest.mark.parametrize("D, d, proj_dim", [(40, 8, 16), (40, 20, 6)])
def test_projected_linear_equals_log_svd_of_PW(D, d, proj_dim):
    W = _gaussian(D, d, seed=8)
    z = _gaussian(3, d, seed=9)
    log_sv = lsv(_linear(W), z, method="projected", proj_dim=proj_dim, seed=11,
                                 progress=False)
    P = projection_matrix(D, proj_dim, seed=11)
    assert log_sv.shape == (3, min(proj_dim, d))
    torch.testing.assert_close(log_sv, _log_svd(P @ W).expand(3, -1), atol=1e-10, rtol=0)


def test_projected_top_k_keeps_leading_values():
    W, z = _gaussian(40, 8, seed=8), _gaussian(2, 8, seed=9)
    full = lsv(_linear(W), z, method="projected", proj_dim=16, progress=False)
    top = lsv(_linear(W), z, method="projected", proj_dim=16, k=3,
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
    highest = lsv(G, z.float(), progress=False)
    bf16 = lsv(G, z.float(), progress=False, precision="bf16")
    tf32 = lsv(G, z.float(), progress=False, precision="tf32")
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
    lsv(G, z, progress=False)
    assert seen and set(seen) == {(False, False)}
    seen.clear()
    lsv(G, z, progress=False, precision="tf32")
    assert set(seen) == {(True, True)}
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
    with pytest.raises(ValueError, match="float32 option"):
        lsv(G, z.double(), progress=False, precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        lsv(G, z, progress=False, precision="fp8")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_exact_mlp_equals_autograd_jacobian_svd():
    net, z = _mlp(6, 20), _gaussian(5, 6, seed=12)
    J_ref = torch.stack([torch.autograd.functional.jacobian(lambda x: net(x[None])[0], zi)
                         for zi in z])  # [B, D, d]
    torch.testing.assert_close(jac(net, z, progress=False), J_ref, atol=1e-12, rtol=0)
    log_sv = lsv(net, z, progress=False)
    torch.testing.assert_close(log_sv, _log_svd(J_ref), atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", ["exact", "projected", "topk"])
def test_chunking_does_not_change_results(method):
    net, z = _mlp(6, 20), _gaussian(7, 6, seed=13)
    # topk: 5 = 3 + 2 of 6 directions, so the iteration (and each latent's stop) matters
    kw = dict(method=method, k=3 if method == "topk" else None, oversample=2, tol=1e-8,
              proj_dim=8, progress=False)
    runs = [lsv(net, z, chunk=c, block=b, **kw)
            for c, b in [(None, None), (1, 1), (3, 2), (None, 3), (2, None)]]
    plan = plan_of(net, z, memory=120_000, **{k: v for k, v in kw.items() if k != "progress"})
    assert plan.chunk * plan.block < len(z) * 8  # the small budget really splits the work
    runs.append(lsv(net, z, memory=120_000, **kw))
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], atol=1e-12, rtol=0)


def test_cpu_plan_caps_chunk_to_cache_sized_calls(monkeypatch):
    """On a CPU the budget's chunk is capped so chunk·block·(bytes per direction) stays near
    _CPU_CALL_BYTES (big vmapped calls ran ~2× slower), down to 1 latent; a given chunk wins and
    results do not change (test_chunking_does_not_change_results)."""
    net, z = _mlp(6, 20), _gaussian(64, 6, seed=13)
    free = plan_of(net, z)
    assert free.chunk == 64  # the whole batch fits the budget
    monkeypatch.setattr(spectra.memory, "CPU_CALL_BYTES", 40 * free.block * free.per_direction)
    assert plan_of(net, z).chunk == 40
    monkeypatch.setattr(spectra.memory, "CPU_CALL_BYTES", 1)
    assert plan_of(net, z).chunk == 1
    assert plan_of(net, z, chunk=64).chunk == 64


def test_cpu_plan_runs_big_reverse_mode_rows_as_plain_vjps(monkeypatch):
    """On a CPU, reverse mode with big rows (>= _CPU_PLAIN_VJP_BYTES a direction) runs block 1,
    plain VJPs without vmap, over chunks holding _CPU_VJP_CALL_BYTES of rows; small rows, forward
    mode and a given block or chunk are left alone; results do not change."""
    net, z = _mlp(6, 20), _gaussian(8, 6, seed=15)
    kw = dict(method="projected", proj_dim=6)  # d = proj_dim: 6 VJPs a latent
    free = plan_of(net, z, **kw)
    assert (free.chunk, free.block) == (8, 6)  # a tiny net's rows stay vmapped
    ref = lsv(net, z, progress=False, **kw)
    monkeypatch.setattr(spectra.memory, "CPU_PLAIN_VJP_BYTES", 1)
    monkeypatch.setattr(spectra.memory, "CPU_VJP_CALL_BYTES", 3 * free.per_direction)
    plan = plan_of(net, z, **kw)
    assert (plan.chunk, plan.block) == (3, 1)
    assert plan_of(net, z, block=4, **kw).block == 4
    assert (plan_of(net, z, chunk=5, **kw).chunk, plan_of(net, z, chunk=5, **kw).block) \
        == (5, 1)
    assert plan_of(net, z, method="exact").block == 6  # D > d: 6 JVPs, forward mode
    torch.testing.assert_close(lsv(net, z, progress=False, **kw), ref,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("D, d", [(20, 6), (4, 9)])
def test_forward_and_reverse_jacobians_agree(D, d):
    net, z = _mlp(d, D), _gaussian(3, d, seed=14)
    J_fwd = jac(net, z, mode="forward", chunk=2, progress=False)
    J_rev = jac(net, z, mode="reverse", block=3, progress=False)
    assert J_fwd.shape == (3, D, d)
    torch.testing.assert_close(J_fwd, J_rev, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["exact", "projected", "topk"])
def test_float32_run_close_to_float64_and_returns_float64(method):
    net, z = _mlp(6, 20), _gaussian(4, 6, seed=15)
    kw = dict(method=method, k=3 if method == "topk" else None, proj_dim=8, tol=1e-5,
              progress=False)
    ref = lsv(net, z, **kw)
    out = lsv(net.float(), z, dtype=torch.float32, **kw)
    assert out.dtype == F64 and ref.dtype == F64
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    assert (out - ref).abs().max() > 0  # really ran in float32


@pytest.mark.parametrize("method", ["exact", "projected"])
def test_rank_deficient_map_gives_minus_inf_not_nan(method):
    W = _matrix_with_spectrum([3.0, 2.0, 1.0, 0.0], D=10, seed=16)
    log_sv = lsv(_linear(W), _gaussian(2, 4, seed=17), method=method,
                                 proj_dim=6, progress=False)
    assert not torch.isnan(log_sv).any()
    assert torch.isneginf(log_sv[:, -1]).all() and torch.isfinite(log_sv[:, :-1]).all()


def test_zero_jacobian_gives_all_minus_inf():
    log_sv = lsv(lambda z: torch.zeros(len(z), 5, dtype=z.dtype),
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
        lsv(G, z, progress=False, **kw)


def test_bad_mode_and_projection_sizes_raise():
    with pytest.raises(ValueError, match="unknown mode 'sideways'"):
        jac(_G, _Z, mode="sideways")
    with pytest.raises(ValueError, match="proj_dim=20 exceeds the output dimension D=10"):
        projection_matrix(10, 20, seed=0)


def test_training_mode_module_warns():
    net = _mlp(4, 6).train()
    with pytest.warns(UserWarning, match="training mode"):
        lsv(net, _Z, progress=False)


def test_progress_bar_follows_argument_and_environment(monkeypatch, capsys):
    monkeypatch.setenv("MAGNET_LAB_PROGRESS", "0")
    lsv(_G, _Z)
    assert "latent" not in capsys.readouterr().err
    lsv(_G, _Z, progress=True)  # the switch silences every bar (config.progress_enabled)
    assert "latent" not in capsys.readouterr().err
    monkeypatch.delenv("MAGNET_LAB_PROGRESS")
    lsv(_G, _Z, progress=True)
    assert "log_sv[exact]" in capsys.readouterr().err
    monkeypatch.setenv("MAGNET_LAB_PROGRESS", "1")
    lsv(_G, _Z, progress=False)
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
        lsv(_mlp(4, 6), _Z, progress=False)


@pytest.mark.parametrize("method", ["exact", "projected", "topk"])
def test_plan_estimate_fits_budget_and_shrinks_with_it(method):
    net, z = _mlp(6, 20), _gaussian(64, 6, seed=21)
    kw = dict(method=method, k=3 if method == "topk" else None, proj_dim=8)
    big, small = (plan_of(net, z, memory=m, **kw) for m in (1 << 24, 100_000))
    for plan in (big, small):
        assert plan.per_direction > 0 and plan.per_latent > 0
        assert plan.estimate <= plan.budget
    assert big.chunk == 64 and small.chunk * small.block < big.chunk * big.block
    given = plan_of(net, z, chunk=5, block=2, **kw)  # the user's sizes win, no probe
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
    ref = lsv(net, z, chunk=1, block=1, **kw)
    # more than 6 latent-directions (or latents) in one op are refused, so chunk=7, block=8
    # fails and is halved down to block 1, then to chunk 3
    with _RefuseLargeBatches(6, net) as refuse, pytest.warns(RuntimeWarning,
                                                              match="finished with chunk="):
        out = lsv(net, z, chunk=7, block=8, **kw)
    assert refuse.refused > 0 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def test_out_of_memory_at_one_latent_one_direction_and_other_errors_propagate():
    net, z = _mlp(6, 20), _gaussian(3, 6, seed=23)
    with _RefuseLargeBatches(0, net), pytest.raises(RuntimeError, match="can't allocate memory"):
        lsv(net, z, chunk=1, block=1, progress=False)

    def broken(x):
        raise RuntimeError("shape mismatch in layer 3")
    calls = []
    with pytest.raises(RuntimeError, match="shape mismatch"):
        lsv(lambda x: broken(x) if calls else calls.append(1) or net(x), z,
                            chunk=3, block=6, progress=False)


def test_default_1024_latent_dcgan_shard_plan_fits_budget_and_rss_stays_bounded():
    """The default bank shard (1024 float32 latents, projected) on the embedded DCGAN: the plan
    fits the default 2 GiB budget (before this budget, one chunk of all 1024 latents × 128
    directions needed ~49 GB); a subprocess running two chunks at a 256 MiB budget grows its
    peak RSS by less than 2 × that budget (measured ~1.0 × alone; allocator slack under load)."""
    import magnet_lab
    G = magnet_lab.load_generator("fmnist-dcgan")
    z = torch.randn(1024, G.z_dim, generator=torch.Generator().manual_seed(0))
    plan = plan_of(G, z, method="projected")
    assert plan.budget == memory_budget("cpu") and plan.estimate <= plan.budget
    # d = 32 < proj_dim = 128: P·J comes from the 32 JVPs of J (forward mode), all in one block
    assert plan.block == G.z_dim and 1 <= plan.chunk < 1024
    assert 1024 * G.z_dim * plan.per_direction > 2 * plan.budget  # one chunk would not fit

    script = textwrap.dedent("""
        import sys, torch
        import magnet_lab
        from magnet_lab.spectra import (SpectraOptions, SpeedOptions, log_singular_values,
                                        memory_plan)
        projected = SpectraOptions("projected")
        torch.set_num_threads(1)
        G = magnet_lab.load_generator("fmnist-dcgan")
        z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(0))
        budget = 256 << 20
        chunk = memory_plan(G, z, projected, speed=SpeedOptions(memory=budget)).chunk
        log_singular_values(G, z[:2], projected,
                            speed=SpeedOptions(progress=False, chunk=1, block=16))
        kib = lambda key: int(next(l.split()[1] for l in open("/proc/self/status")
                                   if l.startswith(key)))
        before = kib("VmRSS:") << 10
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        out = log_singular_values(G, z[:2 * chunk], projected,
                                  speed=SpeedOptions(progress=False, memory=budget))
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


# ----------------------------------------------------------------------------- public seams

class _ConditionalNet(torch.nn.Module):
    """A tiny class-conditional generator G(z, c): the one-hot class c [B, n_classes] picks an
    embedding that scales the hidden units and shifts the output (float64)."""

    def __init__(self, d: int = 3, n_classes: int = 4, D: int = 7) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.embed = torch.nn.Linear(n_classes, 16, bias=False)
        self.hidden, self.out = torch.nn.Linear(d, 16), torch.nn.Linear(16, D)
        self.shift = torch.nn.Linear(n_classes, D, bias=False)
        self.double().eval()

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.hidden(z) * (1 + self.embed(c)))  # [B, 16]
        return self.out(h) + self.shift(c)  # [B, D]


@pytest.mark.parametrize("method", ["exact", "projected", "topk"])
def test_conditioning_c_is_chunked_with_z_and_matches_the_autograd_jacobian_in_z(method):
    net, z = _ConditionalNet(), _gaussian(5, 3, seed=30)
    labels = torch.tensor([0, 3, 1, 1, 2])
    c = torch.nn.functional.one_hot(labels, 4).double()  # [5, 4]
    J = torch.stack([torch.autograd.functional.jacobian(lambda x: net(x[None], ci[None])[0], zi)
                     for zi, ci in zip(z, c)])  # [B, D, d]: the Jacobian in z only
    options = SpectraOptions(method, k=3 if method == "topk" else None, proj_dim=7, tol=1e-10)
    want = _log_svd(spectra.projection_matrix(7, 7, seed=0) @ J if method == "projected" else J)
    for speed in (SpeedOptions(progress=False), SpeedOptions(chunk=2, block=1, progress=False)):
        got = log_singular_values(net, z, options, speed=speed, c=c)  # [B, 3]
        torch.testing.assert_close(got, want[:, :got.shape[1]], atol=1e-9, rtol=0)
    torch.testing.assert_close(jacobian(net, z, c=c, speed=SpeedOptions(chunk=2)), J,
                               atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="one row per latent"):
        log_singular_values(net, z, options, c=c[:4])


def test_count_products_counts_directions_times_latents_of_each_kind():
    net, z = _mlp(4, 9), _gaussian(3, 4, seed=31)
    quiet = SpeedOptions(progress=False)
    with spectra.count_products() as exact:  # d = 4 <= D = 9: forward mode, 4 JVPs a latent
        log_singular_values(net, z, speed=quiet)
    assert (exact.jvp, exact.vjp) == (3 * 4, 0)
    with spectra.count_products() as outer:
        with spectra.count_products() as inner:  # proj_dim = 2 < d: 2 VJPs a latent
            log_singular_values(net, z, SpectraOptions("projected", proj_dim=2), speed=quiet)
        log_singular_values(net, z, speed=quiet)
    assert (inner.jvp, inner.vjp) == (0, 3 * 2) and (outer.jvp, outer.vjp) == (3 * 4, 3 * 2)


def test_options_are_frozen_validated_and_split_values_from_speed():
    options = SpectraOptions("topk", k=4, tol=1e-3)
    with pytest.raises(AttributeError):
        options.k = 5  # frozen
    assert options.replace(k=5).k == 5 and options.k == 4
    with pytest.raises(ValueError, match="needs k"):
        options.replace(k=None)
    with pytest.raises(TypeError, match="dtype must be None or a floating-point"):
        SpectraOptions(dtype=torch.int64)
    with pytest.raises(TypeError, match="progress must be"):
        SpeedOptions(progress="yes")
    with pytest.raises(TypeError, match="options must be a SpectraOptions"):
        log_singular_values(_G, _Z, {"method": "exact"})
    assert set(f.name for f in __import__("dataclasses").fields(SpeedOptions)) \
        == {"chunk", "block", "memory", "progress"}
    assert options.identity(torch.float32) == {
        "method": "topk", "k": 4, "proj_dim": None, "seed": 0, "tol": 1e-3, "max_iter": 50,
        "oversample": 10, "precision": "highest", "algorithm": "block-lanczos-8",
        "dtype": "float32"}


def test_precision_flags_is_public_and_restores_the_flags():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with spectra.precision_flags("tf32"):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    with spectra.precision_flags("highest"):
        assert not (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
