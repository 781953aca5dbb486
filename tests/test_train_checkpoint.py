"""Checkpoints: atomic writes, keep-last-k, and exact round trips of weights, state and RNG."""

import random

import numpy as np
import pytest
import torch

import train.checkpoint as ckpt
from train.checkpoint import (
    CheckpointData,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
    set_rng_state,
)


def data(step: int) -> CheckpointData:
    return CheckpointData(step=step, model_state={"w": torch.full((2, 3), float(step)), "b": torch.arange(3.0)[1:]},
                          state={"data_position": step * 4, "optimizer": {"lr": 0.1}},
                          model_config={"preset": "tiny", "dim": 8}, train_config={"seed": 0})


def test_round_trip_and_rng(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    path = save_checkpoint(root, data(5), keep_last=2)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    weights, model_config = load_weights(tmp_path / "run")
    assert torch.equal(weights["w"], torch.full((2, 3), 5.0)) and torch.equal(weights["b"], torch.tensor([1.0, 2.0]))
    assert model_config == {"preset": "tiny", "dim": 8}
    state, rng = load_state(path)
    assert state["step"] == 5 and state["data_position"] == 20 and state["train_config"] == {"seed": 0}
    set_rng_state(rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert load_state(path, rank=1)[1] is None


def test_keep_last_k(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30, 40, 50):
        save_checkpoint(root, data(step), keep_last=3)
    assert [p.name for p in list_checkpoints(root)] == ["step_00000030", "step_00000040", "step_00000050"]
    assert sorted(p.name for p in root.iterdir()) == ["step_00000030", "step_00000040", "step_00000050"]
    assert latest_checkpoint(tmp_path) == root / "step_00000050"
    save_checkpoint(root, data(50), keep_last=3)  # the same step again replaces it
    assert len(list_checkpoints(root)) == 3


def test_crash_mid_write_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    good = save_checkpoint(root, data(10), keep_last=1)

    real_save = torch.save

    def crash(obj, path, *args, **kwargs):  # RNG and weights are written, then the process dies in state.pt
        if not str(path).endswith("state.pt"):
            return real_save(obj, path, *args, **kwargs)
        open(path, "wb").write(b"partial")
        raise OSError("disk died")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk died"):
        save_checkpoint(root, data(20), keep_last=1)
    monkeypatch.undo()
    assert (root / ".tmp_step_00000020" / "model.safetensors").is_file()  # the crash happened late
    assert resolve_checkpoint(tmp_path) == good
    weights, _ = load_weights(tmp_path)
    assert torch.equal(weights["w"], torch.full((2, 3), 10.0))
    assert load_state(good)[0]["step"] == 10
    # The next save cleans the debris and proceeds normally.
    save_checkpoint(root, data(30), keep_last=1)
    assert sorted(p.name for p in root.iterdir()) == ["step_00000030"]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        resolve_checkpoint(tmp_path)
