"""`torchrun -m magnet_lab bank`: CPU ranks build the bank one process builds.

The torchrun tests start real jobs of 2 CPU processes, because launching, killing and resuming
ranks is what they are about. The generator is the shipped FMNIST DCGAN (d = 32, about 40 ms
per latent on one thread), the banks a few dozen latents. Every rank runs one intra-op thread
(torchrun's default on the CPU, pinned here), and so does the single-process reference: CPU
log σ agree bit for bit only at the same thread count.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from magnet_lab import paths
from magnet_lab.__main__ import main
from magnet_lab.bank import VolumeBank, build, worker_shards

ENV = {**os.environ, "MAGNET_LAB_PROGRESS": "0", "PYTHONPATH": str(paths.root()),
       "OMP_NUM_THREADS": "1"}
ENV = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(nproc), "-m", "magnet_lab", "bank", *args]


def _single_process_bank(args: list[str], out: Path) -> VolumeBank:
    """The same command built in this process on one thread, as each rank runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["bank", *args, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return VolumeBank.load(out)


def _assert_same_bank(a: VolumeBank, b: VolumeBank) -> None:
    assert a.meta["identity"] == b.meta["identity"]
    for name in ("log_sv", "latents", "seeds", "labels"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        assert x is None or torch.equal(x, y), name


def _ranks(agent_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun's agent ``agent_pid`` started."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rsplit(")", 1)[1]
                                              .split()[1]) != agent_pid:
                continue
            env = dict(item.split("=", 1) for item in
                       (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in item)
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if "RANK" in env:
            found[int(env["RANK"])] = int(proc.name)
    return found


def test_two_cpu_ranks_build_the_single_process_bank_bit_for_bit(tmp_path):
    args = ["--n-latents", "7", "--shard-size", "2", "--seed", "4"]  # 4 shards, the last short
    job = subprocess.run(_torchrun(*args, "--out", str(tmp_path / "dist")), env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "[bank rank 0/2] 4 latents" in job.stdout and "[bank rank 1/2] 3 latents" in job.stdout
    assert "[bank] 7 latents, log σ (7, 32) from 4 shard(s), 4 computed by 2 rank(s)" in job.stdout
    merged = VolumeBank.load(tmp_path / "dist")
    assert merged.meta["identity"]["device"] == "cpu"
    _assert_same_bank(merged, _single_process_bank(args, tmp_path / "single"))


def test_a_killed_rank_resumes_without_recomputing_finished_shards(tmp_path):
    out = tmp_path / "dist"
    args = ["--n-latents", "40", "--shard-size", "2", "--seed", "5", "--per-row-seeds"]
    n_shards = 20
    job = subprocess.Popen(_torchrun(*args, "--out", str(out)), env=ENV, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = set()
    try:
        deadline = time.monotonic() + 120
        while not ((out / "shard-00000.safetensors").exists()
                   and (out / "shard-00001.safetensors").exists()):  # one shard of each rank
            assert job.poll() is None and time.monotonic() < deadline, "the job ended first"
            time.sleep(0.005)
        ranks = _ranks(job.pid)
        started |= set(ranks.values())
        os.kill(ranks[1], signal.SIGKILL)
        assert job.wait(timeout=120) != 0  # torchrun saw rank 1 die and stopped rank 0
    finally:
        for pid in [job.pid, *started]:  # nothing of this job outlives the test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        job.wait()
    done = sorted(out.glob("shard-*.safetensors"))
    assert 2 <= len(done) < n_shards, "the build must be interrupted mid-way"
    with pytest.raises(ValueError, match=r"missing rows \[\d+, \d+\).*unfinished worker"):
        VolumeBank.load(out)  # coverage: the folder is not a bank yet
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done}

    resumed = subprocess.run(_torchrun(*args, "--out", str(out)), env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{n_shards - len(done)} computed by 2 rank(s)" in resumed.stdout
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done} == stamps
    assert not list(out.glob(".*.tmp"))
    merged = VolumeBank.load(out)
    assert torch.equal(merged.seeds, torch.arange(5, 45))
    _assert_same_bank(merged, _single_process_bank(args, tmp_path / "single"))


def test_ranks_past_the_last_shard_wait_at_the_barrier_and_say_so(tmp_path):
    job = subprocess.run(_torchrun("--n-latents", "2", "--shard-size", "2", "--out",
                                   str(tmp_path / "dist")),
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "[bank rank 1/2] no shard to compute: 2 latents make 1 shard(s)" in job.stdout
    assert "[bank rank 1/2] waiting at the barrier" in job.stdout
    assert "[bank] 2 latents, log σ (2, 32) from 1 shard(s), 1 computed by 2 rank(s)" in job.stdout


@pytest.mark.parametrize("env, extra, message", [
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, ["--worker", "0/2"],
     "--worker and torchrun both split the shards"),
    ({"RANK": "0"}, [], "this environment has only RANK"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, [], "need 0 <= RANK < WORLD_SIZE"),
    ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, ["--device", "mps"],
     "torchrun bank builds run on cuda or cpu, got --device mps"),
])
def test_torchrun_misuse_is_a_one_line_user_error(tmp_path, monkeypatch, capsys, env, extra,
                                                  message):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["bank", "--n", "2", "--out", str(tmp_path / "b"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_a_worker_past_the_last_shard_has_nothing_to_do(tmp_path, capsys):
    assert main(["bank", "--n", "2", "--shard-size", "2", "--worker", "1/2",
                 "--out", str(tmp_path / "b")]) == 0
    assert "no shard to compute: 2 latents make 1 shard(s) of 2" in capsys.readouterr().out
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("n, shard_size", [(1, 4), (7, 2), (12, 3)])
def test_worker_shards_split_the_same_shards_whatever_the_worker_count(n, shard_size):
    n_shards = -(-n // shard_size)
    for count in (1, 2, 3, 8):
        shares = [worker_shards(n, shard_size, (i, count)) for i in range(count)]
        assert sorted(i for share in shares for i in share) == list(range(n_shards))
    with pytest.raises(ValueError, match="worker must be"):
        worker_shards(n, shard_size, (2, 2))


def test_build_refuses_a_worker_that_owns_no_shard(tmp_path):
    z = torch.zeros(4, 2, dtype=torch.float64)  # [N, d]
    with pytest.raises(ValueError, match="worker 2/3 owns no shard: 4 latents make 2 shard"):
        build(lambda x: x, z, tmp_path / "b", generator_id="id", fingerprint="id", shard_size=2,
              worker=(2, 3))
    assert not (tmp_path / "b").exists()
