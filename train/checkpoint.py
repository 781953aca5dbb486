"""Training checkpoints: written atomically, kept last-k, resumed exactly.

A checkpoint is a directory `<run_dir>/checkpoints/step_<00000000>/` holding
  model.safetensors   the network weights; metadata "model_config" / "train_config" (JSON) so the
                      file alone rebuilds the model (`build_model(from_dict(ModelConfig, model_config))`)
  state.pt            optimizer, lr scheduler, step, data position, counters, both configs
  rng_rank<r>.pt      python / numpy / torch RNG states of every process (they differ per rank)
Both .pt files hold only tensors and plain Python values, so they load with `weights_only=True`:
nothing in a checkpoint is ever executed.

Atomicity: everything is written into a hidden temporary directory next to the final one, which is
then renamed into place with `os.replace`. A crash mid-write leaves only a temporary directory that
is ignored (and cleaned up by the next save), so the last complete checkpoint always loads. A
checkpoint damaged later (a disk fault, a truncated copy, a file that is not what it claims) is
skipped with a warning when resuming from the latest one, in favour of the newest one that loads.
With several processes, the directory must be on a filesystem all of them share (as for any
multi-node checkpointing); every rank writes its RNG file, the main process everything else and the
rename.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from model.pretrained import WEIGHTS, CheckpointError, checkpoint_name, list_checkpoints, read_weights

_TMP_PREFIX = ".tmp_"
_RNG = re.compile(r"^rng_rank(\d+)\.pt$")


@dataclass
class CheckpointData:
    """What one process contributes to a checkpoint (the model and state only matter on the main one)."""

    step: int
    model_state: dict[str, Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # optimizer, scheduler, data position, ...
    model_config: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)


def rng_state() -> dict[str, Any]:
    """The RNG states as tensors and plain values (numpy's key array as an int64 tensor), which a
    weights-only load accepts."""
    numpy_state = np.random.get_state(legacy=False)  # {"state": {"key": uint32 [624], "pos"}, "has_gauss", "gauss"}
    state = {
        "python": random.getstate(),  # (version, 625 ints, gauss or None)
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                                                               "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: str | os.PathLike, data: CheckpointData, keep_last: int, rank: int = 0,
                    barrier: Callable[[], None] = lambda: None) -> Path:
    """Write `data` as checkpoint `root/step_<step>` atomically; keep the newest `keep_last`.

    Every process must call this (collectively, in the same order); `barrier` synchronises them.
    """
    root = Path(root)
    final = root / checkpoint_name(data.step)
    tmp = root / f"{_TMP_PREFIX}{final.name}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        tmp.mkdir()
    barrier()
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        meta = {"model_config": json.dumps(data.model_config), "train_config": json.dumps(data.train_config),
                "step": str(data.step)}
        # Fresh contiguous copies: safetensors refuses views and tensors sharing storage.
        weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in data.model_state.items()}
        save_file(weights, str(tmp / WEIGHTS), metadata=meta)
        state = dict(data.state, step=data.step, model_config=data.model_config, train_config=data.train_config)
        torch.save(state, tmp / "state.pt")
    barrier()
    if rank == 0:
        if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
            _discard(final)
        os.replace(tmp, final)
        for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            _discard(old)
    barrier()
    return final


def _discard(path: Path) -> None:
    """Delete a directory: rename it out of the checkpoint namespace first, so a crash mid-delete
    never leaves a half-deleted directory that looks like a checkpoint."""
    trash = path.with_name(f"{_TMP_PREFIX}trash_{path.name}")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash)


def _remove_stale(root: Path) -> None:
    for p in root.iterdir():
        if p.name.startswith(_TMP_PREFIX):
            shutil.rmtree(p, ignore_errors=True)


def load_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and model config from a checkpoint directory, run directory or `.safetensors` file."""
    weights, meta = read_weights(path)
    return weights, json.loads(meta.get("model_config", "{}"))


def load_state(checkpoint: str | os.PathLike, rank: int = 0) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(training state, this rank's RNG state or None if the checkpoint was written by fewer ranks).

    Every rank's RNG file is read, not only this rank's, so all ranks agree on whether the
    checkpoint is readable.
    """
    checkpoint = Path(checkpoint)
    state = _load_pt(checkpoint / "state.pt")
    rngs = {int(m.group(1)): _load_pt(p) for p in sorted(checkpoint.iterdir()) if (m := _RNG.match(p.name))}
    return state, rngs.get(rank)


@dataclass
class Resumed:
    """Everything a run continues from, read from one checkpoint."""

    path: Path
    weights: dict[str, Tensor]
    model_config: dict[str, Any]
    state: dict[str, Any]
    rng: dict[str, Any] | None


def load_resume(checkpoint: str | os.PathLike, rank: int = 0) -> Resumed:
    """Read a whole checkpoint; a CheckpointError if any part of it cannot be read."""
    checkpoint = Path(checkpoint)
    weights, model_config = load_weights(checkpoint / WEIGHTS)
    state, rng = load_state(checkpoint, rank)
    return Resumed(checkpoint, weights, model_config, state, rng)


def load_latest(root: str | os.PathLike, rank: int = 0, warn: Callable[[str], None] = print) -> Resumed | None:
    """The newest checkpoint under `root` (a checkpoints folder) that reads completely; None if there is none.

    An unreadable newer checkpoint is reported through `warn` and passed over for the one before it.
    """
    found = list_checkpoints(root)
    for checkpoint in reversed(found):
        try:
            return load_resume(checkpoint, rank)
        except CheckpointError as e:
            warn(f"{e}; falling back to the previous checkpoint")
    if found:
        raise CheckpointError(f"none of the {len(found)} checkpoints in {root} can be read (see the warnings "
                              "above); start a new run with another --run-dir")
    return None


def _load_pt(path: Path) -> Any:
    """torch.load restricted to tensors and plain values: a pickled object that would run code on
    load (or any other class) is refused, never executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint file {path} is corrupt or holds objects other than tensors and plain "
                              f"values, which are never loaded ({_reason(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt ({_reason(e)})") from None


def _reason(error: Exception) -> str:
    """A short cause: the global a weights-only load refused, else the message's first sentence (torch's
    follow-up advice to load the file unsafely does not apply here)."""
    refused = re.search(r"GLOBAL ([\w.]+)", str(error))
    if refused:
        return f"it refers to {refused.group(1)}"
    return str(error).strip().split("\n")[0].split(". ")[0] or type(error).__name__
