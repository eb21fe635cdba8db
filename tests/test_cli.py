"""`python -m magnet_lab` end to end: bank identity, resumable builds, sampling, user errors.

Most tests call ``main`` in-process; the kill -9, determinism and exit-status tests start real
processes, because that is what they are about.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from magnet_lab import paths
from magnet_lab.__main__ import UserError, main, parse_params, parse_value
from magnet_lab.bank import VolumeBank, shard_name

PY = sys.executable
ENV = {**os.environ, "MAGNET_LAB_PROGRESS": "0", "PYTHONPATH": str(paths.root())}


def _copy_generator(folder: Path, name: str = "g", scale: float = 1.0) -> Path:
    """The shipped DCGAN copied to ``folder/name.safetensors`` (+ sidecar), its first weight
    tensor multiplied by ``scale`` (1: the same weights); header metadata kept as it was."""
    src = paths.data_dir() / "fmnist-dcgan.safetensors"
    with safe_open(str(src), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    first = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[first] = tensors[first] * scale
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.safetensors"
    save_file(tensors, str(out), metadata=meta)
    side = json.loads(src.with_suffix(".json").read_text())
    side.pop("weights_sha256")  # the copy's bytes are its own
    out.with_suffix(".json").write_text(json.dumps(side))
    return out


def _evil_pth(folder: Path) -> tuple[Path, Path]:
    """A .pth whose unpickling would run ``touch MARKER``; returns (file, marker path)."""
    marker = folder / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = folder / "evil.pth"
    torch.save({"weight": Payload()}, path)
    path.with_suffix(".json").write_text(json.dumps({"architecture": "FmnistDCGAN",
                                                     "kwargs": {}}))
    return path, marker


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "magnet_lab", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


# ----------------------------------------------------------------------------- happy path

def test_bank_workers_then_sample_with_nothing_but_the_bank(tmp_path, capsys):
    out = tmp_path / "bank"
    common = ["bank", "--n", "6", "--shard-size", "2", "--seed", "3", "--out", str(out)]
    assert main(common + ["--worker", "0/2"]) == 0
    with pytest.raises(ValueError, match="missing rows"):
        VolumeBank.load(out)  # worker 1 has not run yet
    assert main(common + ["--worker", "1/2"]) == 0
    vb = VolumeBank.load(out)
    assert len(vb) == 6 and vb.rank == 32 and torch.isfinite(vb.log_sv).all()
    ident = vb.meta["identity"]
    assert vb.meta["generator_id"] == "fmnist-dcgan" and ident["method"] == "exact"
    assert ident["latents"]["law"] == "gaussian" and ident["latents"]["seed"] == 3
    assert ident["dtype"] == "float32" and ident["device"] == "cpu"

    stem = tmp_path / "samples"
    assert main(["sample", "--bank", str(out), "--rho", "-1", "--n", "4", "--out", str(stem)]) == 0
    picked = json.loads(stem.with_suffix(".indices.json").read_text())
    assert len(set(picked["indices"])) == 4 and all(0 <= i < 6 for i in picked["indices"])
    assert picked["generator_fingerprint"] == ident["generator_fingerprint"]
    assert stem.with_suffix(".png").stat().st_size > 0
    assert "4 samples at rho=-1" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bank identity

def test_cli_banks_keep_the_cache_folder_they_had_before_the_latent_law_seam(tmp_path,
                                                                            monkeypatch):
    """Folder names computed on the code before the latent law moved to magnet_lab.latent:
    a bank built then is found (and resumed) now, with --per-row-seeds too."""
    monkeypatch.setenv("MAGNET_LAB_CACHE_DIR", str(tmp_path))
    common = ["bank", "--n", "4", "--seed", "3", "--shard-size", "2"]
    assert main(common) == 0
    assert main(common + ["--per-row-seeds"]) == 0
    assert sorted(p.name for p in (tmp_path / "banks").iterdir()) == [
        "fmnist-dcgan-679b2abd9b7846ba", "fmnist-dcgan-df24f6481b558fa8"]


def test_a_worker_with_retrained_weights_at_the_same_path_is_refused(tmp_path, capsys):
    """The reproduction: shard 0 built from g.safetensors, the file overwritten with other
    weights, shard 1 built into the same folder. It used to merge silently (log σ 0.83 off)."""
    gen = _copy_generator(tmp_path / "models")
    out = tmp_path / "bank"
    common = ["bank", "--generator", str(gen), "--n", "4", "--shard-size", "2", "--out", str(out)]
    assert main(common + ["--worker", "0/2"]) == 0
    _copy_generator(tmp_path / "models", scale=1.5)  # a "retrained" checkpoint, same path
    capsys.readouterr()
    assert main(common + ["--worker", "1/2"]) == 2
    err = capsys.readouterr().err
    assert "generator_fingerprint differs" in err and "\n" not in err.strip()
    assert not (out / shard_name(1)).exists()
    # and sample refuses to render the bank's latents with the changed weights
    _copy_generator(tmp_path / "models")  # the original weights back: worker 1 may finish
    assert main(common + ["--worker", "1/2"]) == 0
    _copy_generator(tmp_path / "models", scale=1.5)
    capsys.readouterr()
    assert main(["sample", "--bank", str(out), "--n", "2", "--out", str(tmp_path / "s")]) == 2
    assert "fingerprint" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("change, field", [(["--seed", "1"], "latents.seed differs: 0 vs 1"),
                                           (["--dtype", "float64"], "dtype differs"),
                                           (["--method", "projected", "--proj-dim", "8"],
                                            "method differs"),
                                           (["--precision", "bf16"],
                                            "precision differs: 'highest' vs 'bf16'")])
def test_workers_that_differ_in_latents_dtype_or_method_do_not_merge(tmp_path, capsys, change,
                                                                        field):
    out = tmp_path / "bank"
    common = ["bank", "--n", "4", "--shard-size", "2", "--out", str(out)]
    assert main(common + ["--worker", "0/2"]) == 0
    capsys.readouterr()
    assert main(common + change + ["--worker", "1/2"]) == 2
    assert field in capsys.readouterr().err


def test_reduced_precision_in_float64_is_a_one_line_error(tmp_path, capsys):
    assert main(["bank", "--n", "2", "--dtype", "float64", "--precision", "tf32",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "float32 option" in err and "\n" not in err.strip()


def test_same_weights_under_another_path_share_the_bank(tmp_path):
    gen = _copy_generator(tmp_path / "models")
    out = tmp_path / "bank"
    assert main(["bank", "--n", "4", "--shard-size", "2", "--out", str(out), "--worker", "0/2"]) == 0
    assert main(["bank", "--generator", str(gen), "--n", "4", "--shard-size", "2",
                 "--out", str(out), "--worker", "1/2"]) == 0
    assert len(VolumeBank.load(out)) == 4


# ----------------------------------------------------------------------------- resumable

def test_kill_9_during_a_build_then_resume_is_bit_identical(tmp_path):
    out, ref = tmp_path / "killed", tmp_path / "reference"
    args = ["bank", "--n", "24", "--shard-size", "3"]
    proc = subprocess.Popen([PY, "-m", "magnet_lab", *args, "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("shard-*.safetensors"))) < 2:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in out.glob("shard-*.safetensors"))
    assert 2 <= len(done_before) < 8, "the build must be interrupted mid-way"
    mtimes = {name: (out / name).stat().st_mtime_ns for name in done_before}
    resumed = _run(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{8 - len(done_before)} shard(s) computed" in resumed.stdout
    assert {n: (out / n).stat().st_mtime_ns for n in done_before} == mtimes  # not recomputed
    assert not list(out.glob(".*.tmp"))
    assert _run(*args, "--out", str(ref)).returncode == 0
    a, b = VolumeBank.load(out), VolumeBank.load(ref)
    for name in ("log_sv", "latents"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_orphaned_temporary_files_of_own_shards_are_removed_on_resume(tmp_path):
    out = tmp_path / "bank"
    common = ["bank", "--n", "4", "--shard-size", "2", "--out", str(out)]
    assert main(common) == 0
    (out / shard_name(1)).unlink()
    orphan = out / f".{shard_name(1)}.abc123.tmp"  # what a kill during write_bytes_atomic leaves
    orphan.write_bytes(b"half a shard")
    others = out / f".{shard_name(7)}.zzz.tmp"  # not this build's shard: left alone
    others.write_bytes(b"x")
    with pytest.warns(UserWarning, match="removed 1 temporary file"):
        assert main(common + ["--worker", "1/2"]) == 0
    assert not orphan.exists() and others.exists() and (out / shard_name(1)).exists()


# ----------------------------------------------------------------------------- determinism

DETERMINISM_SCRIPT = """
import hashlib, torch
import magnet_lab
from magnet_lab import sampling, spectra
G = magnet_lab.load_generator("fmnist-dcgan", dtype=torch.float64)
z = sampling.gaussian_latents(2, G.z_dim, seed=11, dtype=torch.float64)
out = {"z": z}
for method, kw in (("exact", {}), ("projected", {"proj_dim": 16}),
                   ("topk", {"k": 2, "tol": 1e-3})):
    out[method] = spectra.log_singular_values(G, z, spectra.SpectraOptions(method, **kw),
                                              speed=spectra.SpeedOptions(progress=False))
fake_log_sv = torch.randn(500, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
w = sampling.log_weights(fake_log_sv.sort(1, descending=True).values, 1.0)
out["idx"] = sampling.resample(w, 50, rng=torch.Generator().manual_seed(5))
out["idx_replace"] = sampling.resample(w, 50, replace=True,
                                      rng=torch.Generator().manual_seed(5))
for k, v in out.items():
    print(k, hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest())
"""


def test_latents_spectra_and_indices_are_identical_across_processes():
    runs = [subprocess.run([PY, "-c", DETERMINISM_SCRIPT], capture_output=True, text=True,
                           env=ENV, timeout=300) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    lines = runs[0].stdout.split("\n")
    assert len([ln for ln in lines if ln.strip()]) == 6
    assert runs[0].stdout == runs[1].stdout


# ----------------------------------------------------------------------------- user errors

def test_parameters_are_typed_as_papermill_types_them():
    assert parse_value("1") == 1 and isinstance(parse_value("1"), int)
    assert parse_value("-0.5") == -0.5 and parse_value("1e-4") == 1e-4
    assert parse_value("True") is True and parse_value("false") is False
    assert parse_value("None") is None
    assert parse_value("[-1, 0, 1.5]") == [-1, 0, 1.5]
    assert parse_value("fmnist-dcgan") == "fmnist-dcgan"
    assert parse_value("/tmp/x.pkl") == "/tmp/x.pkl"
    assert parse_params(["seed=1", "rhos=[-1, 1]", "generator=a=b"]) == {
        "seed": 1, "rhos": [-1, 1], "generator": "a=b"}
    with pytest.raises(UserError, match="NAME=VALUE"):
        parse_params(["seed"])
    with pytest.raises(UserError, match="cannot read"):
        parse_value("[1, 2")


def test_report_passes_typed_parameters_to_the_notebook(monkeypatch, tmp_path):
    from magnet_lab import reports

    seen = {}
    monkeypatch.setattr(reports, "run_notebook",
                        lambda key, params, **kw: seen.update({key: params}))
    assert main(["report", "--smoke", "--only", "01", "--out", str(tmp_path), "-p", "seed=1",
                 "-p", "rhos=[-1, 0.5]"]) == 0
    assert seen["01"]["seed"] == 1 and seen["01"]["rhos"] == [-1, 0.5]
    assert seen["01"]["smoke"] is True


@pytest.mark.parametrize("argv, message", [
    (["sample", "--bank", "no/such/bank", "--out", "x"], "no bank at no/such/bank"),
    (["bank", "--generator", "no-such-model", "--n", "2", "--out", "b"], "unknown generator"),
    (["bank", "--generator", "missing.safetensors", "--n", "2", "--out", "b"], "not found"),
    (["bank", "--n", "2", "--worker", "3", "--out", "b"], "--worker takes I/N"),
    (["bank", "--n", "2", "--method", "topk", "--out", "b"], "needs k"),
    (["report", "--only", "99"], "no unique notebook"),
    (["report", "--only", "01", "-p", "sede=1"], "has no parameter(s) ['sede']"),
])
def test_user_errors_print_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_n_above_the_candidates_is_a_user_error_and_debug_shows_the_traceback(tmp_path, capsys):
    out = tmp_path / "bank"
    assert main(["bank", "--n", "3", "--out", str(out)]) == 0
    argv = ["sample", "--bank", str(out), "--n", "5", "--out", str(tmp_path / "s")]
    capsys.readouterr()
    assert main(argv) == 2
    assert "--n 5 is more than the 3 candidates" in capsys.readouterr().err
    with pytest.raises(UserError):
        main(["--debug"] + argv)
    assert main(argv + ["--replace"]) == 0  # with replacement 5 of 3 is fine


def test_exit_status_and_output_of_a_real_process():
    r = _run("sample", "--rho", "-1", "--bank", "no/such/bank", "--out", "x")  # "-1" parses
    assert r.returncode == 2 and r.stderr.strip() == "error: no bank at no/such/bank"


def test_malicious_checkpoints_are_refused_by_the_cli_without_running_them(tmp_path, capsys):
    evil, marker = _evil_pth(tmp_path)
    assert main(["bank", "--generator", str(evil), "--n", "2", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "weights_only=False" not in err
    assert not marker.exists()


@pytest.mark.notebook
def test_malicious_generator_parameter_of_a_report_is_refused(tmp_path, capsys, output_dirs):
    evil, marker = _evil_pth(tmp_path)
    assert main(["report", "--smoke", "--only", "03", "--out", str(tmp_path / "r"),
                 "-p", f"generator={evil}"]) == 2
    err = capsys.readouterr().err
    assert "03_rho_sweep.ipynb failed" in err and "ValueError" in err
    assert not marker.exists()


# ----------------------------------------------------------------------------- conditional

def test_biggan_folder_bank_classes_then_sample_one_class_round_trip(tmp_path, capsys):
    """A tiny BigGAN-deep folder: `bank --classes 0,2` draws candidates of those classes only
    (stored as the bank's labels, the authors' recipe as run options); `sample --class 2`
    generates with class 2 and records the labels, equal to generate with those labels."""
    from builders import BIGGAN_TINY, randomise_biggan, write_biggan_folder

    from magnet_lab import models
    from magnet_lab.models.biggan import BigGANDeep
    from magnet_lab.registry import load_generator

    folder = tmp_path / "biggan-tiny"
    write_biggan_folder(randomise_biggan(BigGANDeep(**BIGGAN_TINY)), folder)
    out = tmp_path / "bank"
    assert main(["bank", "--generator", str(folder), "--n", "12", "--classes", "0,2",
                 "--truncation", "1", "--z-scale", "0.9", "--k", "3", "--method", "topk",
                 "--out", str(out)]) == 0
    vb = VolumeBank.load(out)
    assert set(vb.labels.tolist()) == {0, 2} and vb.meta["identity"]["n_classes"] == 3
    assert vb.meta["generator_options"] == {"truncation": 1.0, "z_scale": 0.9}
    assert vb.meta["identity"]["latents"]["law"] == "truncated_normal"
    stem = tmp_path / "cls2"
    assert main(["sample", "--bank", str(out), "--class", "2", "--n", "3", "--rho", "1",
                 "--out", str(stem)]) == 0
    rec = json.loads(stem.with_suffix(".indices.json").read_text())
    assert rec["labels"] == [2, 2, 2] and rec["class_ids"] == "2"
    assert all(vb.labels[i] == 2 for i in rec["indices"]) and set(rec["class_ess"]) == {"2"}
    G = load_generator(str(folder), truncation=1.0, z_scale=0.9)
    images = models.generate(G, vb.latents[rec["indices"]], labels=torch.tensor(rec["labels"]))
    assert images.shape == (3, 3, 16, 16) and stem.with_suffix(".png").stat().st_size > 0
    eq = tmp_path / "equal"
    assert main(["sample", "--bank", str(out), "--class-balance", "equal", "--n", "4",
                 "--out", str(eq)]) == 0
    assert sorted(json.loads(eq.with_suffix(".indices.json").read_text())["labels"]) == [0, 0, 2, 2]
    capsys.readouterr()
    assert main(["sample", "--bank", str(out), "--class", "1", "--n", "2", "--out", str(eq)]) == 2
    assert "classes [1] have no candidate" in capsys.readouterr().err


def test_conditional_stylegan2_banks_and_samples_per_class(tmp_path, capsys):
    from builders import write_conditional_stylegan2

    path = write_conditional_stylegan2(tmp_path / "sg2c.safetensors", c_dim=3)
    out = tmp_path / "bank"
    assert main(["bank", "--generator", str(path), "--n", "9", "--classes", "1",
                 "--method", "topk", "--k", "2", "--out", str(out)]) == 0
    vb = VolumeBank.load(out)
    assert vb.labels.tolist() == [1] * 9
    stem = tmp_path / "s"
    assert main(["sample", "--bank", str(out), "--class", "1", "--n", "4", "--rho", "0",
                 "--out", str(stem)]) == 0
    assert json.loads(stem.with_suffix(".indices.json").read_text())["labels"] == [1] * 4


@pytest.mark.parametrize("argv, message", [
    (["bank", "--n", "2", "--classes", "1", "--out", "b"], "--classes needs a class-conditional"),
    (["bank", "--n", "2", "--classes", "1,x", "--out", "b"], "comma-separated class ids"),
    (["bank", "--n", "2", "--classes", "1,1", "--out", "b"], "distinct class ids"),
])
def test_class_options_on_an_unconditional_generator_are_one_line_errors(tmp_path, monkeypatch,
                                                                         capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_sample_class_on_an_unconditional_bank_is_refused(tmp_path, capsys):
    out = tmp_path / "bank"
    assert main(["bank", "--n", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["sample", "--bank", str(out), "--class", "1", "--n", "2",
                 "--out", str(tmp_path / "s")]) == 2
    assert "has no class labels" in capsys.readouterr().err
