"""Checkpoints: atomic writes, keep-last-k, exact round trips of weights, state and RNG, loads that
never execute what a file contains, and falling back past an unreadable latest checkpoint."""

import builtins
import random

import numpy as np
import pytest
import torch

import train.checkpoint as ckpt
from model.pretrained import CheckpointError, latest_checkpoint, list_checkpoints, resolve_checkpoint
from train.checkpoint import CheckpointData, load_latest, load_state, load_weights, save_checkpoint, set_rng_state
from train.optim import build_scheduler


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


class CreatesFile:
    """Unpickling this calls open(path, "w"): a stand-in for any code a pickle can run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


@pytest.mark.parametrize("name", ["state.pt", "rng_rank0.pt", "rng_rank1.pt"])
def test_a_pickled_payload_is_never_executed(tmp_path, name):
    root = tmp_path / "checkpoints"
    older = save_checkpoint(root, data(1), keep_last=0)
    path = save_checkpoint(root, data(2), keep_last=0)
    marker = tmp_path / "payload_ran"
    torch.save({"step": 2, "optimizer": CreatesFile(marker)}, path / name)
    with pytest.raises(CheckpointError, match=f"{name} is corrupt or holds objects other than tensors and plain "
                                              "values, which are never loaded \\(it refers to "):
        load_state(path)  # rank 0 reads every rank's RNG file too: all ranks agree the checkpoint is bad
    assert not marker.exists()
    warnings = []
    resumed = load_latest(root, warn=warnings.append)
    assert not marker.exists()
    assert resumed.path == older and resumed.state["step"] == 1 and len(warnings) == 1 and name in warnings[0]


def test_checkpoint_files_load_weights_only(tmp_path):
    """What the trainer writes (optimizer, scheduler, RNG of python, numpy and torch) passes torch's
    weights-only unpickler on its own, with no allow-listed globals."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = build_scheduler(optimizer, warmup=1, total=10)
    np.random.seed(3), np.random.normal()  # a cached Gaussian in numpy's state
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    path = save_checkpoint(tmp_path, CheckpointData(step=1, model_state=model.state_dict(), state=state), keep_last=0)
    expected = np.random.normal()
    for name in ("state.pt", "rng_rank0.pt"):
        torch.load(path / name, weights_only=True)
    loaded, rng = load_state(path)
    optimizer.load_state_dict(loaded["optimizer"])
    set_rng_state(rng)
    assert np.random.normal() == expected


def test_every_unreadable_checkpoint_is_an_error(tmp_path):
    root = tmp_path / "checkpoints"
    path = save_checkpoint(root, data(1), keep_last=0)
    (path / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints .* can be read"):
        load_latest(root, warn=lambda m: None)
    assert load_latest(tmp_path / "nothing_here") is None
