"""Paths, provenance, atomic writes, figures and the setup's reading of environment.yml."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

from magnet_lab import paths, plots, provenance

ROOT = Path(__file__).resolve().parent.parent


def test_paths_follow_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("MAGNET_LAB_FIGURES_DIR", str(tmp_path / "figs"))
    monkeypatch.setenv("MAGNET_LAB_REPORTS_DIR", str(tmp_path / "reps"))
    assert paths.figures_dir() == (tmp_path / "figs").resolve() and paths.figures_dir().is_dir()
    assert paths.reports_dir() == (tmp_path / "reps").resolve()
    monkeypatch.delenv("MAGNET_LAB_FIGURES_DIR")
    assert paths.figures_dir() == paths.root() / "figures"
    assert (paths.root() / "magnet_lab" / "paths.py").is_file()


def test_write_json_atomic_converts_values_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "r.json"
    provenance.write_json_atomic(target, {"t": torch.tensor([1.5, 2.0]), "inf": float("inf"),
                                          "nan": float("nan"), "p": Path("/x")})
    data = json.loads(target.read_text())
    assert data == {"t": [1.5, 2.0], "inf": "inf", "nan": None, "p": "/x"}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    target = tmp_path / "r.json"
    provenance.write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        provenance.write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_provenance_records_versions_and_this_checkouts_commit():
    rec = provenance.provenance(seed=3)
    assert rec["seed"] == 3 and rec["versions"]["torch"].startswith("2.14.1")
    if not (paths.root() / ".git").exists():
        pytest.skip("not a git checkout: there is no commit to record")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.root(), capture_output=True,
                          text=True, check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", rec["git_commit"])
    assert rec["git_commit"].split("+")[0] == head


def test_git_commit_is_the_codes_state_not_the_jobs_outputs(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert provenance.git_commit(tmp_path) is None  # not a repository
    git("init", "-q")
    for rel in ("code.py", "figures/f.png", "reports/r.json"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("v1")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert provenance.git_commit(tmp_path) == sha
    (tmp_path / "figures/f.png").write_text("v2")  # a report rewrote a tracked figure
    (tmp_path / "reports/r.json").write_text("v2")
    (tmp_path / "untracked.txt").write_text("x")
    assert provenance.git_commit(tmp_path) == sha
    (tmp_path / "code.py").write_text("v2")  # the code changed: that is dirty
    assert provenance.git_commit(tmp_path) == sha + "+dirty"


def test_results_file_records_seed_parameters_and_provenance(tmp_path):
    path = provenance.write_results(tmp_path / "r.json", {"metric": 0.5}, seed=7,
                                    parameters={"smoke": True})
    data = json.loads(path.read_text())
    assert data["seed"] == 7 and data["parameters"] == {"smoke": True} and data["metric"] == 0.5
    assert "versions" in data["provenance"]


def test_save_figure_writes_png_pdf_and_sidecar(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    out = plots.save_figure(fig, "unit_fig", {"rho": 1.0}, directory=tmp_path)
    plt.close(fig)
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["pdf"].read_bytes()[:5] == b"%PDF-"
    side = json.loads(out["json"].read_text())
    assert side["parameters"] == {"rho": 1.0} and side["figure"] == "unit_fig"
    with pytest.raises(ValueError, match="plain file stem"):
        plots.save_figure(fig, "a/b", directory=tmp_path)


def test_image_grid_places_images_and_maps_range():
    imgs = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0)])
    grid = plots.image_grid(imgs, nrow=2, pad=1, pad_value=0.5)
    assert grid.shape == (4, 7, 1)
    assert (grid[1:3, 1:3] == 0).all() and (grid[1:3, 4:6] == 1).all() and grid[0, 0, 0] == 0.5
    with pytest.raises(ValueError, match=r"\[N, 1\|3, H, W\]"):
        plots.image_grid(torch.zeros(2, 2, 2))


def test_setup_reads_exactly_the_pip_list_of_environment_yml():
    """The venv route installs what environment.yml lists: the project with its extras."""
    import yaml

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "scripts/env_requirements.py environment.yml" in (ROOT / "scripts" / "setup.sh").read_text()
    got = subprocess.run([sys.executable, str(ROOT / "scripts" / "env_requirements.py"),
                          str(ROOT / "environment.yml")], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert [g for g in got if g] == pip_list
    # The packages and their pins are declared once, in pyproject.toml (tests/test_packaging.py).
    assert pip_list == ["-e .[faces,notebooks,browser,dev]"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make reports" in readme
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_ci_err_clips_intervals_that_miss_the_estimate():
    err = plots.ci_err([1.0, 5.0], [0.5, 5.5], [2.0, 7.0])  # 2nd: interval above the value
    assert err.tolist() == [[0.5, 0.0], [1.0, 2.0]]


def test_atomic_writes_are_readable_by_others(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = provenance.write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_notebooks_are_clean_and_start_with_a_parameters_cell():
    import nbformat

    books = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [b.stem[:2] for b in books] == ["00", "01", "02", "03", "04", "05"]
    for book in books:
        nb = nbformat.read(book, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), book
        first = code[0]
        assert "parameters" in first.metadata.get("tags", []), book
        for name in ("seed", "smoke", "results_path"):
            assert re.search(rf"^{name} = ", first.source, re.M), (book, name)


def test_kernel_of_another_venv_is_not_taken_for_this_one(tmp_path):
    """Another venv's python links to the same base interpreter; it is still another env."""
    import os

    from magnet_lab import reports

    other = tmp_path / "other-venv" / "bin"
    other.mkdir(parents=True)
    (other / "python").symlink_to(os.path.realpath(sys.executable))
    assert not reports.same_environment(str(other / "python"))
    assert reports.same_environment(sys.executable)
    assert not reports.same_environment("python")  # relative: decided by PATH, not by us


def test_run_notebook_takes_relative_paths_from_the_callers_directory(tmp_path, monkeypatch):
    """papermill runs the kernel in notebooks/, so a relative ``out_dir`` (``report --out
    reports``) or ``results_path`` would land under notebooks/; the runner makes them absolute
    from the caller's working directory."""
    import papermill

    from magnet_lab import reports

    seen = {}

    def fake_execute(src, out, parameters, **kwargs):  # writes where the notebook would
        seen.update(parameters)
        Path(parameters["results_path"]).write_text('{"ok": 1}')

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.chdir(tmp_path)
    assert reports.run_notebook("01", {"smoke": True}, out_dir="rel") == {"ok": 1}
    assert seen["results_path"] == str(tmp_path / "rel" / "01_spline_sanity.json")
    assert reports.run_notebook("01", {"results_path": "r.json"}, out_dir="rel") == {"ok": 1}
    assert seen["results_path"] == str(tmp_path / "r.json")


def test_a_smoke_report_keeps_its_figures_out_of_the_full_runs_folder(tmp_path, monkeypatch):
    """Smoke runs write figures under their own output folder (a smoke run on another generator
    would otherwise overwrite the shipped figures/); full runs, and an explicit
    MAGNET_LAB_FIGURES_DIR, keep the configured folder."""
    import papermill

    from magnet_lab import paths, reports

    seen = []

    def fake_execute(src, out, parameters, **kwargs):  # what the kernel would inherit
        seen.append(str(paths.figures_dir()))
        Path(parameters["results_path"]).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.delenv("MAGNET_LAB_FIGURES_DIR", raising=False)
    reports.run_notebook("01", {"smoke": True}, out_dir=tmp_path / "smoke")
    reports.run_notebook("01", {"smoke": False}, out_dir=tmp_path / "full")
    monkeypatch.setenv("MAGNET_LAB_FIGURES_DIR", str(tmp_path / "mine"))
    reports.run_notebook("01", {"smoke": True}, out_dir=tmp_path / "smoke")
    assert seen[0] == str(tmp_path / "smoke" / "figures")
    assert seen[1] == str(paths.root() / "figures") and seen[2] == str(tmp_path / "mine")
