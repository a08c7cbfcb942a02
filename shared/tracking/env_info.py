"""What a run ran on: git commit, packages, hardware, command line (written to ``env.json``).

Nothing here imports torch or another heavy module: package versions come from
`importlib.metadata`, and GPUs are listed only when the caller has already imported torch.
Every probe degrades to ``None`` instead of raising: a missing git must never stop a run.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import shared

PACKAGES = ("rlab", "torch", "transformers", "tokenizers", "numpy", "safetensors")
"""Distributions whose versions every env.json records ("rlab" is the lab itself)."""

_GIT_TIMEOUT_S = 5.0


def collect_env(seed: int) -> dict[str, Any]:
    """A JSON-serialisable description of this process's environment.

    Keys: ``git`` ({sha, dirty, root} or Nones), ``python``, ``platform``, ``packages``
    ({name: version or None}), ``seed``, ``cpu`` ({model, count, usable}), ``gpu`` ({cuda, devices}),
    ``command`` (sys.argv), ``cwd``, ``hostname``, ``pid``, ``start_time`` (ISO 8601, local with offset).
    """
    return {
        "git": git_info(Path(shared.__file__).resolve().parent),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "packages": package_versions(),
        "seed": seed,
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "start_time": now_iso(),
    }


def now_iso() -> str:
    """Local time with its UTC offset, to the second: ``2026-01-31T14:05:09+01:00``."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # git not installed, timeout, ...
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(directory: Path) -> dict[str, Any]:
    """{sha, dirty, root} of the git work tree holding `directory`; Nones outside a repository.

    ``sha`` is None in a repository without commits; ``dirty`` is True when ``git status
    --porcelain`` lists anything (untracked files included).
    """
    root = _git(directory, "rev-parse", "--show-toplevel")
    if root is None:
        return {"sha": None, "dirty": None, "root": None}
    sha = _git(directory, "rev-parse", "HEAD")
    status = _git(directory, "status", "--porcelain")
    return {
        "sha": sha.strip() if sha else None,
        "dirty": bool(status.strip()) if status is not None else None,
        "root": root.strip(),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None when it is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info() -> dict[str, Any]:
    """{model, count, usable}: model name from /proc/cpuinfo where there is one."""
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    model = value.strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"model": model or platform.processor() or None, "count": os.cpu_count(), "usable": usable}


def gpu_info() -> dict[str, Any]:
    """{cuda, devices}: CUDA device names, but only when torch is already imported.

    Importing torch here would cost seconds in every process that merely creates a run folder;
    a training process has imported it before it creates its run.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {"cuda": None, "devices": [], "note": "torch was not imported when the run was created"}
    try:
        if not torch.cuda.is_available():
            return {"cuda": torch.version.cuda, "devices": []}
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return {"cuda": torch.version.cuda, "devices": names}
    except Exception as err:  # a broken driver must not stop the run
        return {"cuda": None, "devices": [], "error": repr(err)}
