"""`python -m magnet_lab bank` / `sample` on the embedded generator, in-process."""
from __future__ import annotations

import json

import pytest
import torch

from magnet_lab.__main__ import main
from magnet_lab.bank import VolumeBank


def test_bank_workers_then_sample(tmp_path, capsys):
    out = tmp_path / "bank"
    common = ["bank", "--n", "6", "--shard-size", "2", "--seed", "3", "--out", str(out)]
    assert main(common + ["--worker", "0/2"]) == 0
    with pytest.raises(ValueError, match="missing rows"):
        VolumeBank.load(out)  # worker 1 has not run yet
    assert main(common + ["--worker", "1/2"]) == 0
    vb = VolumeBank.load(out)
    assert len(vb) == 6 and vb.rank == 32 and torch.isfinite(vb.log_sv).all()
    assert vb.meta["generator_id"] == "fmnist-dcgan" and vb.meta["method"] == "exact"

    stem = tmp_path / "samples"
    assert main(["sample", "--bank", str(out), "--rho", "1", "--n", "4", "--out", str(stem)]) == 0
    picked = json.loads(stem.with_suffix(".indices.json").read_text())
    assert len(set(picked["indices"])) == 4 and all(0 <= i < 6 for i in picked["indices"])
    assert stem.with_suffix(".png").stat().st_size > 0
    assert "4 samples at rho=1.0" in capsys.readouterr().out
