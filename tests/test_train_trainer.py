"""The shared trainer end to end on the tiny network: two-process DDP, exact resume, skipping of NaN
batches, learning on procedural scenes, and the command line."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from model.pretrained import latest_checkpoint, list_checkpoints
from model.typed_config import load_config
from train import checkpoint as ckpt
from train.config import TrainConfig
from train.trainer import Trainer, main

REPO = Path(__file__).resolve().parents[1]
TRAIN_STEP = Trainer.train_step


class Crash(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny network's tensors are too small to gain from intra-op threads, and on a busy machine
    idle OpenMP threads spinning for their share make each step ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Roots holding three training and two held-out procedural scenes as DL3DV folders (rendered once)."""
    root = tmp_path_factory.mktemp("scenes")
    for seed in range(5):
        scene = generate_scene(ProceduralConfig(num_frames=12, width=48, height=32, seed=seed))
        write_dl3dv_scene(scene, root / ("train" if seed < 3 else "held_out") / f"scene{seed}")
    return root / "train", root / "held_out"


def tiny_overrides(run_dir, scenes, *overrides) -> list[str]:
    train, held_out = scenes
    return [
        f"run_dir={run_dir}", "mixed_precision=fp32", "data.source=folders", "data.num_workers=0",
        f"data.paths=[{train}]", f"data.eval_paths=[{held_out}]",
        "data.views.num_inputs=2", "data.views.num_targets=2", "data.views.min_frame_dist=4",
        "data.views.max_frame_dist=11", "data.resolution.size=32", "model.preset=tiny",
        "optim.batch_size=1", "optim.warmup_steps=0", "optim.lr=1e-3", "loss.perceptual=0", "loss.depth=0",
        "eval.every=0", "eval.lpips=false", "eval.save_images=false", "log.progress_bar=false",
        "log.tensorboard=false", "render.checkpoint_views=false", *overrides]


def tiny_config(run_dir, scenes, *overrides) -> TrainConfig:
    return load_config(TrainConfig, None, tiny_overrides(run_dir, scenes, *overrides))


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def record_steps(monkeypatch, crash_after: int | None = None) -> list:
    """Record (loss, skipped, weights) after every step; optionally die before step crash_after + 1."""
    history = []

    def step(self):
        if crash_after is not None and self.step == crash_after:
            raise Crash("simulated crash")
        details, norm, skipped = TRAIN_STEP(self)
        history.append((details["loss"].item(), skipped, weights(self)))
        return details, norm, skipped

    monkeypatch.setattr(Trainer, "train_step", step)
    return history


def test_resume_continues_exactly(scenes, tmp_path, monkeypatch):
    overrides = ("optim.steps=4", "checkpoint.save_every=2", "eval.num_scenes=0")
    straight = record_steps(monkeypatch)
    Trainer(tiny_config(tmp_path / "straight", scenes, *overrides)).fit()

    interrupted = record_steps(monkeypatch, crash_after=2)
    with pytest.raises(Crash):
        Trainer(tiny_config(tmp_path / "split", scenes, *overrides)).fit()
    assert latest_checkpoint(tmp_path / "split").name == "step_00000002"
    resumed = record_steps(monkeypatch)
    Trainer(tiny_config(tmp_path / "split", scenes, *overrides), resume="latest").fit()

    # Same data, RNG, optimizer and schedule state: bit-identical losses and weights (CPU kernels are
    # deterministic for a fixed thread count, so no tolerance is needed).
    assert [h[0] for h in interrupted + resumed] == [h[0] for h in straight]
    final_a, _ = ckpt.load_weights(tmp_path / "straight")
    final_b, _ = ckpt.load_weights(tmp_path / "split")
    assert final_a.keys() == final_b.keys()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert not all(torch.equal(final_a[k], straight[0][2][k]) for k in final_a)  # training did move the weights


def test_nan_batch_is_skipped_and_counted(scenes, tmp_path, monkeypatch, capsys):
    history = record_steps(monkeypatch)
    trainer = Trainer(tiny_config(tmp_path, scenes, "optim.steps=2", "eval.num_scenes=0", "log.every=1",
                                  "checkpoint.save_every=100"))
    before = weights(trainer)
    clean = trainer.batches

    def poisoned():
        batch = next(clean)
        batch.input_images[0, 0, 5, 7, 1] = float("nan")  # one pixel of one view
        yield batch
        yield from clean

    trainer.batches = poisoned()
    trainer.fit()
    (loss1, skipped1, after1), (loss2, skipped2, after2) = history
    assert skipped1 and loss1 != loss1 and not skipped2 and loss2 == loss2
    assert trainer.skipped == 1
    assert all(torch.equal(before[k], after1[k]) for k in before)  # nothing moved, not even weight decay
    assert all(torch.isfinite(v).all() for v in after2.values())
    assert not all(torch.equal(before[k], after2[k]) for k in before)
    for state in trainer.optimizer.state_dict()["state"].values():
        assert all(torch.isfinite(t).all() for t in state.values() if torch.is_tensor(t))
    assert "step 1: skipped (gradient norm nan); 1 skipped so far" in capsys.readouterr().out
    assert ckpt.load_state(latest_checkpoint(tmp_path))[0]["skipped"] == 1


def test_gradient_norm_above_threshold_is_skipped(scenes, tmp_path):
    trainer = Trainer(tiny_config(tmp_path, scenes, "optim.steps=1", "optim.skip_grad_norm=1e-12",
                                  "eval.num_scenes=0"))
    before = weights(trainer)
    trainer.fit()
    assert trainer.skipped == 1
    assert all(torch.equal(before[k], v) for k, v in weights(trainer).items())


def test_learns_on_procedural_scenes(scenes, tmp_path):
    trainer = Trainer(tiny_config(tmp_path, scenes, "optim.steps=20", "optim.lr=1e-2", "eval.num_scenes=2",
                                  "checkpoint.save_every=100"))
    assert len(trainer.eval_data) == 2  # the held-out root folder expands to its two scenes
    before = trainer.run_eval()["psnr"]
    after = trainer.fit()["psnr"]
    print(f"held-out PSNR {before:.2f} -> {after:.2f} dB")
    # Held-out PSNR up by >= 1.5 dB: the rendering MSE on unseen scenes falls by at least 29%.
    assert after > before + 1.5, (before, after)


def test_two_processes_end_with_identical_weights(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo DDP) on procedural scenes rendered on the fly."""
    helper = tmp_path / "launch_stage1.py"
    helper.write_text(textwrap.dedent(f"""
        import hashlib, sys
        from pathlib import Path
        from train.trainer import main
        trainer = main(sys.argv[1:], default_config={str(REPO / "train/configs/stage1.yaml")!r}, prog="stage1.py")
        state = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
        rank = trainer.accelerator.process_index
        Path(trainer.config.run_dir, f"weights_rank{{rank}}.sha256").write_text(digest)
    """))
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(helper),
               "--run-dir", str(run_dir), "data=synthetic", "mixed_precision=fp32", "model.preset=tiny",
               "model.overrides={}", "data.num_workers=0", "data.views.num_inputs=2", "data.views.num_targets=2",
               "data.resolution.size=32", "data.synthetic.scenes=2", "data.synthetic.frames=8",
               "data.synthetic.width=32", "data.synthetic.height=32", "optim.steps=3", "optim.warmup_steps=1",
               "optim.batch_size=1", "optim.global_batch_size=2", "loss.perceptual=0", "loss.depth=0",
               "eval.every=0", "eval.num_scenes=1", "eval.lpips=false", "log.progress_bar=false"]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = [(run_dir / f"weights_rank{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    final = latest_checkpoint(run_dir)
    assert final.name == "step_00000003" and (final / "rng_rank1.pt").is_file()
    saved, model_config = ckpt.load_weights(final)
    assert hashlib.sha256(b"".join(saved[k].numpy().tobytes() for k in sorted(saved))).hexdigest() == digests[0]
    assert model_config["dim"] == 32  # the tiny preset, stored so the checkpoint rebuilds its network


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--data", "synthetic", "optim.lrr=1"], "unknown config key optim.lrr (did you mean optim.lr?)"),
    ([], "data.source='folders' needs data.paths, e.g. data.paths=[/data/DL3DV-10K]"),
    (["--data", "synthetic", "model.preset=huge"], "unknown model preset 'huge'"),
    (["--data", "synthetic", "log.tensorboard=maybe"], "log.tensorboard must be true or false, got 'maybe'"),
    (["--data", "synthetic", "optim.batch_size=2.5"], "optim.batch_size must be an integer, got 2.5"),
    (["data.paths=/x"], "data.paths must be a list in brackets, such as data.paths=[/x], got '/x'"),
    (["--data", "synthetic", "checkpoint.save_every=-1"], "checkpoint.save_every and checkpoint.keep_last must be"),
    (["data.paths=[/nonexistent/scenes]"], "data.paths entry /nonexistent/scenes does not exist"),
    (["data.source=shards", "data.paths=['/nonexistent/shard-{000000..000003}.tar']"], "matches no shard file"),
    # 24 frames per procedural video, 30 input views asked for
    (["--data", "synthetic", "data.views.num_inputs=30"], "data.synthetic.frames=24 is fewer than the 30 distinct"),
])
def test_command_line_mistakes_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args, default_config=REPO / "train/configs/stage1.yaml", prog="stage1.py")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err


def one_line_error(capsys, args, default_config=None) -> str:
    """Run the command line, expecting exit code 2 and exactly one `error:` line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args], default_config=default_config, prog="stage1.py")
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert err.count("error: ") == 1 and err.endswith("\n") and err.splitlines()[-1].startswith("error: "), err
    return err.splitlines()[-1] + "\n" + out


def test_data_and_run_dir_mistakes_are_one_line(scenes, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = one_line_error(capsys, tiny_overrides(tmp_path / "a", scenes, f"data.paths=[{empty}]"))
    assert f"data.paths entry {empty} holds no scene" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim:\n  lr: [1\n")
    err = one_line_error(capsys, ["--config", broken])
    assert f"config file {broken} is not valid YAML at line 3" in err
    afile = tmp_path / "afile"
    afile.write_text("")
    err = one_line_error(capsys, tiny_overrides(afile, scenes))
    assert f"run_dir {afile} cannot be created: {afile} is a file" in err
    err = one_line_error(capsys, tiny_overrides(afile / "run", scenes))
    assert f"run_dir {afile / 'run'} cannot be created: {afile} is a file" in err
    # The scenes have 12 frames: no sample can hold 16 distinct views, every scene is skipped (in a
    # DataLoader worker, whose error arrives with the worker's traceback in its message).
    err = one_line_error(capsys, tiny_overrides(tmp_path / "b", scenes, "data.views.num_inputs=16",
                                                "data.views.max_frame_dist=20", "optim.steps=1", "data.num_workers=1"))
    assert "error: none of the 3 scenes could be used" in err


def test_zero_intervals_save_and_log_only_at_the_end(scenes, tmp_path):
    trainer = Trainer(tiny_config(tmp_path, scenes, "optim.steps=3", "checkpoint.save_every=0", "log.every=0",
                                  "eval.num_scenes=0"))
    logged = []
    trainer._log = lambda sums, steps, *rest: logged.append((trainer.step, steps))
    trainer.fit()
    assert logged == [(3, 3)]  # one log line, over all three steps
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000003"]


def test_resume_with_another_network_is_refused(scenes, tmp_path, capsys):
    Trainer(tiny_config(tmp_path, scenes, "optim.steps=1", "eval.num_scenes=0")).fit()
    err = one_line_error(capsys, ["--resume", *tiny_overrides(tmp_path, scenes, "optim.steps=2",
                                                              "model.overrides.dim=16")])
    assert "holds a different network from the one this config builds (checkpoint -> config: dim 32 -> 16" in err


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(scenes, tmp_path, capsys):
    Trainer(tiny_config(tmp_path, scenes, "optim.steps=4", "checkpoint.save_every=2", "eval.num_scenes=0")).fit()
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_00000004"
    (latest / "state.pt").write_bytes((latest / "state.pt").read_bytes()[:1000])  # truncated by a disk fault
    capsys.readouterr()
    trainer = main(tiny_overrides(tmp_path, scenes, "optim.steps=4", "checkpoint.save_every=2", "eval.num_scenes=0")
                   + ["--resume"])
    out = capsys.readouterr().out
    assert f"warning: checkpoint file {latest / 'state.pt'} is truncated or corrupt" in out
    assert "falling back to the previous checkpoint" in out
    assert f"resumed from {latest.parent / 'step_00000002'} at step 2" in out
    assert trainer.step == 4 and ckpt.load_state(latest)[0]["step"] == 4  # step 4 written again, readable
    # Named explicitly, an unreadable checkpoint is an error, not a silent substitute.
    (latest / "state.pt").write_bytes(b"garbage")
    err = one_line_error(capsys, ["--resume", latest, *tiny_overrides(tmp_path, scenes, "optim.steps=6")])
    assert f"checkpoint file {latest / 'state.pt'} is corrupt or holds objects other than tensors" in err


def test_entry_script_rejects_unknown_option():
    result = subprocess.run([sys.executable, str(REPO / "train/stage3.py"), "--bogus"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unrecognized arguments: --bogus (usage: stage3.py")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["demo.yaml", "demo_continued.yaml"])
def test_demo_configs_rebuild_the_shipped_checkpoint_network(name):
    """The commands in the demo model card must train the network the shipped file holds, even
    after the `small` preset changes: its config (safetensors metadata) is the oracle."""
    from safetensors import safe_open

    from model.config import ModelConfig
    from model.typed_config import from_dict
    from train.model_setup import model_config

    root = Path(__file__).resolve().parent.parent
    with safe_open(root / "checkpoints/demo/model.safetensors", "pt") as f:
        shipped = from_dict(ModelConfig, json.loads(f.metadata()["model_config"]))
    config = load_config(TrainConfig, root / "train/configs" / name, [])
    assert model_config(config.model) == shipped
