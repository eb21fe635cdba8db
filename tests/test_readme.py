"""The README's usage example runs as written and does what it says."""
from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_usage_example_runs_and_draws_magnet_samples():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102 — our own README
    assert scope["log_sv"].shape == (20_000, 1) and scope["log_sv"].dtype == torch.float64
    assert scope["idx"].unique().numel() == 1_000  # without replacement
    assert scope["x_magnet"].shape == (1_000, 2)
