"""Malicious pickle payloads shared by the reader tests: objects whose naive unpickling would
create a marker file through a dangerous global, and the global a safe reader must name."""
from __future__ import annotations

import builtins
import os
import shlex
import subprocess
from pathlib import Path


class Reduce:
    """Pickles as ``fn(*args)``; nested instances build call chains (``getattr(os, "system")``).
    Callable only so that pickle accepts one as another's ``fn``."""

    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args

    def __call__(self, *args):
        raise AssertionError("never called while pickling")


def payload(kind: str, marker: Path) -> tuple[Reduce, str]:
    """``(object, global)``: unpickling ``object`` naively creates ``marker`` through ``kind``
    (``os.system``/``posix.system``, ``builtins.eval``, ``builtins.exec``, ``builtins.getattr``,
    ``subprocess.Popen``); ``global`` is the name a restricted unpickler sees first."""
    touch = f"touch {shlex.quote(str(marker))}"
    write = f"open({str(marker)!r}, 'w').close()"
    if kind in ("os.system", "posix.system"):
        return Reduce(os.system, (touch,)), f"{os.system.__module__}.system"
    if kind == "builtins.eval":
        return Reduce(builtins.eval, (write,)), "builtins.eval"
    if kind == "builtins.exec":
        return Reduce(builtins.exec, (write,)), "builtins.exec"
    if kind == "subprocess.Popen":
        return Reduce(subprocess.Popen, (["touch", str(marker)],)), "subprocess.Popen"
    if kind != "builtins.getattr":
        raise ValueError(f"unknown payload kind {kind!r}")
    system = Reduce(builtins.getattr, (Reduce(builtins.__import__, ("os",)), "system"))
    return Reduce(system, (touch,)), "builtins.getattr"
