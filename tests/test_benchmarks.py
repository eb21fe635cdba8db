"""The benchmarks run and measure the right quantities (no timing is asserted: speed is read
from their output, never trusted from a timed test)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stylegan2_benchmark_methods_agree_with_their_float64_references(tmp_path):
    """On a tiny StyleGAN2 the baseline (autograd.functional.jacobian of P·G) and our projected
    estimator compute the same σ(P·J) as the float64 reference, exact and topk the same top-k
    σ(J); the JSON carries every method's ratio to the baseline and its provenance."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAGNET_LAB_PROGRESS": "0"}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_stylegan2.py"), "--res", "8",
                    "--channel-base", "64", "--channel-max", "16", "--latents", "3",
                    "--proj-dim", "8", "--k", "4", "--tol", "1e-3", "--repeats", "1",
                    "--json", str(out)], check=True, env=env, capture_output=True, timeout=300)
    rec = json.loads(out.read_text())
    res = rec["results"]
    assert set(res) == {"baseline", "projected[highest]", "topk", "exact"}
    # products per latent: one VJP per row of P (d = 512 > proj_dim); exact by D = 192 VJPs
    # (D < d); topk in steps of 8 JVPs + 8 VJPs, at least 2 steps for
    # k + oversample = 14 directions (3 latents)
    assert res["baseline"]["products_per_latent"] == 8
    assert res["projected[highest]"]["products_per_latent"] == 8
    assert res["exact"]["products_per_latent"] == 192
    n_topk = round(res["topk"]["products_per_latent"] * 3)
    assert n_topk % 16 == 0 and n_topk >= 3 * 32
    for name, r in res.items():
        assert r["s_per_latent"] > 0 and r["forward_equivalents"] > 0
        assert r["speedup_vs_baseline"] > 0
        # float32 arithmetic against float64: log-volume agrees to float32 rounding, same ranks
        assert r["max_abs_dlog_volume"] < 1e-3, (name, r)
        assert r["magnet_pick_overlap"] == 1.0
    assert res["baseline"]["speedup_vs_baseline"] == 1.0
    assert rec["D"] == 3 * 8 * 8 and rec["d"] == 512
    assert rec["parameters"]["res"] == 8 and "git_commit" in rec["provenance"]


def test_stylegan3_benchmark_times_config_r_against_its_float64_reference(tmp_path):
    """bench_stylegan3.py (the StyleGAN2 benchmark's code with --arch stylegan3) on a tiny
    config-R StyleGAN3: the baseline and projected estimators give σ(P·J) of the float64
    reference, with P VJPs per latent; the JSON names the architecture and its forward GFLOP;
    ``--methods forward`` times the forward pass alone (the full-size CPU measurement)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAGNET_LAB_PROGRESS": "0"}
    script = str(ROOT / "benchmarks" / "bench_stylegan3.py")
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, script, "--config", "r", "--res", "8", "--channel-base", "64",
                    "--channel-max", "4", "--latents", "2", "--proj-dim", "4", "--k", "2",
                    "--methods", "baseline,projected", "--repeats", "1", "--json", str(out)],
                   check=True, env=env, capture_output=True, timeout=300)
    rec = json.loads(out.read_text())
    res = rec["results"]
    assert set(res) == {"baseline", "projected[highest]"}
    assert rec["architecture"] == "StyleGAN3-R" and rec["parameters"]["arch"] == "stylegan3"
    assert rec["D"] == 3 * 8 * 8 and rec["d"] == 512 and rec["forward_gflop_per_latent"] > 0
    for name, r in res.items():
        assert r["products_per_latent"] == 4, name
        assert r["max_abs_dlog_volume"] < 1e-3 and r["magnet_pick_overlap"] == 1.0, (name, r)
    fwd = tmp_path / "forward.json"
    subprocess.run([sys.executable, script, "--res", "8", "--channel-base", "64",
                    "--channel-max", "4", "--latents", "1", "--repeats", "1", "--methods",
                    "forward", "--json", str(fwd)], check=True, env=env, capture_output=True,
                   timeout=300)
    rec = json.loads(fwd.read_text())
    assert rec["architecture"] == "StyleGAN3-T" and rec["results"] == {}
    assert rec["forward_s_per_latent"] > 0 and rec["forward_cpu_s_per_latent"] > 0
