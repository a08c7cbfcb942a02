"""Atomic checkpoints with integrity checks.

One checkpoint is a folder ``checkpoints/step-00000040/``::

    model.safetensors    one safetensors file per entry of `tensors` (weights: "model", "ref", ...)
    optimizer.pt         one torch.save file per entry of `objects` ("optimizer", "scheduler",
    rng.pt               "rng", "trainer" with step and data position, ...)
    trainer.pt
    checkpoint.json      written LAST: {step, files: {file: {sha256, bytes}}, created}

How a write stays atomic: everything goes to ``.tmp-step-00000040-<pid>/``; each file is fsynced,
then the manifest is written and fsynced, then the folder is renamed to its final name and the
parent folder is fsynced. A crash at any moment leaves either a ``.tmp-*`` folder (ignored by
loaders, removed by the next save) or a complete checkpoint. A folder whose manifest is missing or
whose files do not match their sha256 is never loaded: `latest_checkpoint` warns, naming the bad
file, renames it to ``step-00000040.corrupt-<time>`` and falls back to the previous checkpoint.
Nothing here deletes a checkpoint that is not known to be valid; corrupt ones are moved aside.

torch is imported inside the functions, so importing this module (e.g. from ``rlab runs ls``)
stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 1
TENSORS_SUFFIX = ".safetensors"
OBJECTS_SUFFIX = ".pt"

_STEP_DIR = re.compile(r"^step-(\d{8})$")
_TMP_DIR = re.compile(r"^\.tmp-(?:delete-)?step-\d{8}-(\d+)$")
_ENTRY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HASH_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or loaded; the message names the file at fault."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (and moved aside) because it failed verification."""


def step_dir_name(step: int) -> str:
    """``step-00000040``: 8 digits, so names sort in step order."""
    if not 0 <= step < 10**8:
        raise ValueError(f"checkpoint step must be in [0, 1e8), got {step}")
    return f"step-{step:08d}"


# ---------------------------------------------------------------------------------------------------
# low-level helpers


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _move_aside(path: Path, tag: str) -> Path:
    """Rename `path` to ``<path>.<tag>-<time>`` (``-2``, ``-3`` ... if taken); returns the new path."""
    base = f"{path.name}.{tag}-{_timestamp()}"
    target = path.with_name(base)
    n = 2
    while target.exists():
        target = path.with_name(f"{base}-{n}")
        n += 1
    os.rename(path, target)
    _fsync_dir(path.parent)
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or we can't tell): leave its folder alone
    return True


def _check_entry_names(tensors: dict[str, Any], objects: dict[str, Any]) -> None:
    for name in [*tensors, *objects]:
        if not isinstance(name, str) or not _ENTRY_NAME.match(name):
            raise ValueError(
                f"checkpoint entry name {name!r} must be a plain file stem (letters, digits, _ . -)"
            )


# ---------------------------------------------------------------------------------------------------
# writing


def save_checkpoint(
    ckpt_dir: str | Path,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    objects: dict[str, Any],
    keep_last: int | None = 2,
) -> Path:
    """Write checkpoint `step` atomically into `ckpt_dir` and prune old ones; returns its folder.

    tensors: {"model": model.state_dict(), ...}; each becomes ``<name>.safetensors``. Tensors are
        cloned contiguous onto the CPU first, so tied/shared weights (two keys, one storage) and
        non-contiguous views are fine; on load each key gets its own tensor again and
        ``model.load_state_dict`` ties them back.
    objects: {"optimizer": opt.state_dict(), "scheduler": ..., "rng": capture_rng(),
        "trainer": {"step": ..., "data_position": ...}}; each becomes ``<name>.pt`` (torch.save).
    keep_last: how many valid checkpoints to keep (the one just written always stays; at least 1);
        None keeps all. Older valid ones are deleted; invalid ones are moved aside, never deleted.

    If ``step-XXXXXXXX`` exists already, it is renamed aside first (``.corrupt-<time>`` when it
    fails verification, ``.replaced-<time>`` when it was valid), never deleted or overwritten.
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 (or None to keep all), got {keep_last}")
    _check_entry_names(tensors, objects)
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / step_dir_name(step)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    clean_tmp_dirs(ckpt_dir)

    tmp = ckpt_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():  # our own earlier attempt that raised halfway
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        files = _write_entries(tmp, tensors, objects)
        manifest = {
            "format": FORMAT_VERSION,
            "step": step,
            "files": files,
            "created": time.time(),
        }
        manifest_path = tmp / MANIFEST
        with open(manifest_path, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            _move_aside(final, "corrupt" if verify_checkpoint(final) else "replaced")
        os.rename(tmp, final)
        _fsync_dir(ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last is not None:
        prune_checkpoints(ckpt_dir, keep_last, keep=final)
    return final


def _write_entries(
    folder: Path, tensors: dict[str, dict[str, torch.Tensor]], objects: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    import torch
    from safetensors.torch import save_file

    files: dict[str, dict[str, Any]] = {}
    for name, state in tensors.items():
        path = folder / f"{name}{TENSORS_SUFFIX}"
        # A fresh contiguous CPU copy per key: safetensors refuses tensors that share storage
        # (tied embeddings) and non-contiguous views.
        plain = {
            key: t.detach().to("cpu").clone(memory_format=torch.contiguous_format) for key, t in state.items()
        }
        save_file(plain, str(path))
        files[path.name] = _finish_file(path)
    for name, obj in objects.items():
        path = folder / f"{name}{OBJECTS_SUFFIX}"
        with open(path, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        files[path.name] = _finish_file(path)
    return files


def _finish_file(path: Path) -> dict[str, Any]:
    _fsync_file(path)
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def clean_tmp_dirs(ckpt_dir: str | Path) -> list[Path]:
    """Remove ``.tmp-*`` folders left by crashed writes (not those of a live other process)."""
    removed = []
    for entry in Path(ckpt_dir).iterdir():
        match = _TMP_DIR.match(entry.name)
        if not match or not entry.is_dir():
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int, keep: Path | None = None) -> list[Path]:
    """Delete valid checkpoints beyond the newest `keep_last` valid ones; returns what was deleted.

    `keep` (the one just written) is never deleted. Invalid checkpoints don't count towards
    `keep_last` and are moved aside (``.corrupt-<time>``), not deleted. Validity here is the quick
    check (manifest present, every file with its recorded size): hashing every kept checkpoint
    on every save would re-read gigabytes; `latest_checkpoint` hashes in full.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    valid: list[Path] = []
    for _step, path in sorted(list_checkpoints(ckpt_dir), reverse=True):
        if path == keep:
            valid.append(path)
            continue
        reason = verify_checkpoint(path, full=False)
        if reason is None:
            valid.append(path)
        else:
            _move_aside(path, "corrupt")
    kept = set(valid[:keep_last]) | ({keep} if keep is not None else set())
    deleted = [p for p in valid if p not in kept]
    for path in deleted:
        # Rename first (atomic), then delete: a crash mid-delete leaves a .tmp-* folder that the
        # next save removes, never a half-deleted step-* folder.
        doomed = path.with_name(f".tmp-delete-{path.name}-{os.getpid()}")
        os.rename(path, doomed)
        shutil.rmtree(doomed)
    if deleted:
        _fsync_dir(Path(ckpt_dir))
    return deleted


# ---------------------------------------------------------------------------------------------------
# reading


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``step-XXXXXXXX`` folder, oldest first, valid or not.

    ``.tmp-*`` and ``*.corrupt-*`` folders are not listed.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    out = []
    for entry in ckpt_dir.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and entry.is_dir():
            out.append((int(match.group(1)), entry))
    return sorted(out)


def verify_checkpoint(path: str | Path, full: bool = True) -> str | None:
    """None if the checkpoint at `path` is complete and intact, else the reason, naming the file.

    full=True hashes every file against the manifest's sha256; full=False checks only that the
    manifest is there and every file has its recorded size (catches truncation, not bit flips).
    """
    path = Path(path)
    if not path.is_dir():
        return f"{path}: not a checkpoint folder"
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return f"{manifest_path} missing: write did not finish"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        step = int(manifest["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{manifest_path}: unreadable manifest ({err})"
    match = _STEP_DIR.match(path.name)
    if match and int(match.group(1)) != step:
        return f"{manifest_path}: records step {step}, folder name says {int(match.group(1))}"
    for name, meta in files.items():
        reason = _verify_file(path / name, meta, full)
        if reason:
            return reason
    return None


def _verify_file(file: Path, meta: dict[str, Any], full: bool) -> str | None:
    if not file.is_file():
        return f"{file}: missing"
    size = file.stat().st_size
    if size != meta["bytes"]:
        return f"{file}: {size} bytes, manifest says {meta['bytes']} (truncated or corrupt)"
    if full and _sha256(file) != meta["sha256"]:
        return f"{file}: sha256 mismatch (truncated or corrupt)"
    return None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed ``checkpoint.json`` of a checkpoint folder (no verification)."""
    return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))


def latest_checkpoint(ckpt_dir: str | Path, move_aside: bool = True) -> tuple[int, Path] | None:
    """(step, folder) of the newest valid checkpoint in `ckpt_dir`, or None if there is none.

    Every newer checkpoint that fails verification gets a `CheckpointWarning` naming the bad file
    and (with move_aside, the default) is renamed to ``step-XXXXXXXX.corrupt-<time>`` so that no
    later resume mistakes it for a good one. Older checkpoints are not examined.
    """
    for step, path in reversed(list_checkpoints(ckpt_dir)):
        reason = verify_checkpoint(path)
        if reason is None:
            return step, path
        note = ""
        if move_aside:
            aside = _move_aside(path, "corrupt")
            note = f"; moved aside to {aside.name}"
        warnings.warn(f"skipping checkpoint {path.name}: {reason}{note}", CheckpointWarning, stacklevel=2)
    return None


def load_checkpoint(
    path: str | Path, device: str = "cpu"
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """(tensors, objects) of the checkpoint at `path`, after verifying it in full.

    tensors: {"model": {key: tensor}, ...} from the ``*.safetensors`` files; objects: {"optimizer":
    ..., "rng": ..., "trainer": ...} from the ``*.pt`` files. Everything is loaded onto `device`
    (the optimizer's ``load_state_dict`` moves its state to the parameters' device anyway).
    Raises `CheckpointError` with the reason (naming the file) if verification fails.
    """
    from safetensors.torch import load_file

    path = Path(path)
    reason = verify_checkpoint(path)
    if reason is not None:
        raise CheckpointError(reason)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    objects: dict[str, Any] = {}
    for name in read_manifest(path)["files"]:
        file = path / name
        if name.endswith(TENSORS_SUFFIX):
            tensors[name[: -len(TENSORS_SUFFIX)]] = load_file(str(file), device=device)
        elif name.endswith(OBJECTS_SUFFIX):
            objects[name[: -len(OBJECTS_SUFFIX)]] = _load_object(file, device)
    return tensors, objects


def _load_object(file: Path, device: str) -> Any:
    import pickle

    import torch

    try:
        # Optimizer and scheduler state dicts, capture_rng() and plain trainer dicts all load with
        # the safe unpickler.
        return torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        # An object holding other classes (e.g. a custom dataclass in "trainer"). The file is one
        # we wrote ourselves and its sha256 was just checked against our manifest, so full
        # unpickling is acceptable here; do not point load_checkpoint at checkpoints from elsewhere.
        return torch.load(file, map_location=device, weights_only=False)
