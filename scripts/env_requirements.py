"""Print the `pip:` list of environment.yml, one requirement a line (stdlib only).

scripts/setup.sh installs exactly this list into .venv when conda is absent, as conda would: the
project with its extras (``-e .[faces,notebooks,browser,dev]``), whose dependencies pyproject.toml
declares. Usage: python scripts/env_requirements.py [environment.yml]
"""
import re
import sys


def pip_requirements(text: str) -> list[str]:
    """The entries of the first ``- pip:`` block of a conda environment file's text."""
    out, indent = [], None
    for line in text.splitlines():
        if indent is None:
            if re.match(r"^\s*-\s*pip:\s*$", line):
                indent = len(line) - len(line.lstrip())
            continue
        if not line.strip() or line.strip().startswith("#"):
            continue
        if len(line) - len(line.lstrip()) <= indent:
            break
        out.append(re.sub(r"^\s*-\s*", "", line).split(" #")[0].strip())
    return out


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "environment.yml"
    reqs = pip_requirements(open(path).read())
    if not reqs:
        sys.exit(f"no `pip:` section found in {path}")
    print("\n".join(reqs))
