"""The one trainer every stage uses: accelerate (DDP / FSDP, multi-node, bf16), AdamW with a cosine
schedule, gradient clipping, skipping of bad steps, atomic checkpoints, exact resume, evaluation.

A step is `grad_accum_steps` micro-batches of `batch_size` scenes per process. After the last
micro-batch the gradient norm is computed (after DDP's all-reduce, so every rank sees the same value)
and the step is SKIPPED - gradients zeroed, no optimizer update, counted and logged - when that norm
is not finite (a NaN or Inf anywhere in any rank's batch) or exceeds `optim.skip_grad_norm`. The
learning-rate schedule advances on skipped steps too, so it is a function of the step alone.

Launching (the entry points are train/stage1.py, stage2.py, stage3.py, finetune16.py):
  one process            python train/stage1.py --config train/configs/stage1.yaml [key=value ...]
  GPUs, one machine      accelerate launch --multi_gpu --num_processes 8 train/stage1.py ...
  many machines          accelerate launch --num_machines M --machine_rank R --main_process_ip IP
                         --main_process_port P --multi_gpu --num_processes 8*M train/stage1.py ...
  FSDP                   accelerate launch --use_fsdp ... (or an `accelerate config` file)
  CPU, N processes       accelerate launch --multi_gpu --num_processes N train/stage1.py ...  (or torchrun
                         --nproc_per_node N); without CUDA the processes form a gloo group. Note that
                         `accelerate launch --cpu --num_processes N` starts ONE process unless MPI is set up.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, set_seed
from tqdm import tqdm

from model.cpu_allocator import keep_freed_memory
from model.losses import Losses
from model.lpips import load_lpips
from model.official_checkpoint import check_state_dict
from model.pretrained import CHECKPOINTS, checkpoint_name, latest_checkpoint, resolve_checkpoint
from model.typed_config import flatten, to_dict
from train import checkpoint as ckpt
from train.cli import LATEST, fail, parse
from train.config import TrainConfig, TrainDataConfig
from train.evaluate import evaluate
from train.loaders import eval_dataset, scene_folders, shard_files, train_loader
from train.model_setup import build_from_section, model_config
from train.optim import build_optimizer, build_scheduler
from train.step import forward_loss
from train.tracker import Tracker


def process_state() -> PartialState:
    """The distributed setup. Without CUDA, `cpu=True` makes several launched processes (torchrun, or
    `accelerate launch --multi_gpu --num_processes N`) one gloo process group instead of N single runs."""
    return PartialState(cpu=not torch.cuda.is_available())


def accumulation_steps(config: TrainConfig, num_processes: int) -> int:
    o = config.optim
    if o.global_batch_size is None:
        return o.grad_accum_steps
    per_step = o.batch_size * num_processes
    if o.global_batch_size % per_step:
        raise ValueError(f"optim.global_batch_size={o.global_batch_size} is not a multiple of batch_size "
                         f"({o.batch_size}) x processes ({num_processes})")
    return o.global_batch_size // per_step


def check_run_dir(config: TrainConfig, resume: str | None) -> None:
    """A fresh run must not share a directory with another run's checkpoints: keep-last-k would
    delete by step number, and `--resume` would later pick up the wrong run."""
    found = latest_checkpoint(config.run_dir)
    if resume is None and found is not None:
        raise FileExistsError(f"{config.run_dir} already holds checkpoints ({found.name}); pass --resume to "
                              "continue that run, or choose another --run-dir")


def prepare_run_dir(run_dir: str) -> None:
    """Create the run directory now, so a path that is a file or cannot be written fails before any work."""
    path = Path(run_dir)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise FileExistsError(f"run_dir {run_dir} cannot be created: {blocker} is a file; choose another --run-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"run_dir {run_dir} cannot be created ({e.strerror}); choose another --run-dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"run_dir {run_dir} is not writable; choose another --run-dir")


def check_data(data: TrainDataConfig) -> None:
    """The data a run reads exists, and a sample can hold the views asked for, before any model is built."""
    views = data.views
    needed = max(views.num_inputs, views.num_targets)  # distinct frames one training sample draws
    if data.source == "synthetic":
        if data.synthetic.frames < needed:
            raise ValueError(f"data.synthetic.frames={data.synthetic.frames} is fewer than the {needed} distinct "
                             f"frames a sample needs (data.views.num_inputs={views.num_inputs}, "
                             f"num_targets={views.num_targets}); render longer videos or ask for fewer views")
        return
    if not data.paths:
        example = "[/data/DL3DV-10K]" if data.source == "folders" else "[/data/shards]"
        raise ValueError(f"data.source={data.source!r} needs data.paths, e.g. data.paths={example} "
                         "(or --data synthetic for procedural scenes)")
    if data.source == "folders":
        scene_folders(data.paths)
    else:
        shard_files(data.paths)
    if data.eval_paths:
        scene_folders(data.eval_paths, "data.eval_paths")


def preflight(config: TrainConfig, resume: str | None) -> None:
    """Every check that needs no heavy work, so mistakes fail at once with one line."""
    accumulation_steps(config, process_state().num_processes)
    model_config(config.model)
    check_data(config.data)
    check_run_dir(config, resume)
    prepare_run_dir(config.run_dir)
    for path in (resume if resume not in (None, LATEST) else None, config.checkpoint.init_from):
        if path is not None and not str(path).endswith(".safetensors"):
            resolve_checkpoint(path)
        elif path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")


class Trainer:
    def __init__(self, config: TrainConfig, resume: str | None = None):
        check_run_dir(config, resume)
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.accum = accumulation_steps(config, process_state().num_processes)
        precision = {"fp32": "no"}.get(config.mixed_precision, config.mixed_precision)
        self.accelerator = acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                                             gradient_accumulation_steps=self.accum)
        self.is_main = acc.is_main_process
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = config.tf32

        resumed = self._resume(resume)
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model_config, model = build_from_section(config.model)
        if resumed is not None:
            self._load_weights(model, resumed.weights, resumed.model_config, f"--resume {resumed.path}")
        elif config.checkpoint.init_from:
            weights, saved_config = ckpt.load_weights(config.checkpoint.init_from)
            self._load_weights(model, weights, saved_config, f"checkpoint.init_from={config.checkpoint.init_from}")
        o = config.optim
        model.to(acc.device)  # before the optimizer, as FSDP-wrapping requires
        optimizer = build_optimizer(model, o.lr, o.betas, o.weight_decay, o.eps)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.scheduler = build_scheduler(self.optimizer, o.warmup_steps, o.steps, o.min_lr_ratio)
        self.losses = Losses(config.loss, device=acc.device)

        self.step, self.skipped, rng = 0, 0, None
        if resumed is not None:
            state, rng = resumed.state, resumed.rng
            self._load_optimizer(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.skipped = state["step"], state["skipped"]
            acc.print(f"resumed from {resumed.path} at step {self.step}")
            del resumed
        set_seed(config.seed + acc.process_index)  # per-rank randomness (pruning draws), fresh runs
        loader = train_loader(config.data, o.batch_size, config.seed, acc.process_index, acc.num_processes,
                              position=self.samples_consumed, resume_step=self.step)
        self.batches = iter(loader)  # created before restoring the RNG: creating it draws a seed
        if rng is not None:
            ckpt.set_rng_state(rng)
        self.eval_data = eval_dataset(config.data, config.eval.num_scenes)
        self.eval_lpips = self._eval_lpips()
        self.tracker = (Tracker(self.run_dir, config.log.tensorboard, config.log.wandb, config.log.wandb_project,
                                to_dict(config)) if self.is_main else None)

    @property
    def samples_consumed(self) -> int:
        """Scenes this process has read: the data position a resumed run continues from."""
        return self.step * self.accum * self.config.optim.batch_size

    def _resume(self, resume: str | None) -> ckpt.Resumed | None:
        """What `--resume` continues from. The latest checkpoint of a run falls back to the one before
        it, with a warning, when it cannot be read; a checkpoint named explicitly must read."""
        if resume is None:
            return None
        rank, warn = self.accelerator.process_index, lambda message: self.accelerator.print(f"warning: {message}")
        if resume == LATEST:
            resumed = ckpt.load_latest(self.run_dir / CHECKPOINTS, rank, warn)
            if resumed is None:
                self.accelerator.print(f"no checkpoint in {self.run_dir} yet: starting from scratch")
            return resumed
        path = Path(resume)
        if (path / "model.safetensors").is_file():
            return ckpt.load_resume(path, rank)
        resumed = ckpt.load_latest(path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path, rank, warn)
        if resumed is None:
            resolve_checkpoint(path)  # raises the error naming what --resume expects
        return resumed

    def _load_weights(self, model: torch.nn.Module, weights: dict, saved_config: dict, source: str) -> None:
        """Load weights of the same network, or refuse naming the settings that differ."""
        try:
            check_state_dict(model.state_dict(), weights)
        except ValueError as e:
            ours, theirs = flatten(to_dict(self.model_config)), flatten(saved_config)
            differ = [f"{k} {theirs.get(k)} -> {ours.get(k)}" for k in sorted(ours.keys() | theirs.keys())
                      if ours.get(k) != theirs.get(k)]
            raise ValueError(f"{source} holds a different network from the one this config builds (checkpoint -> "
                             f"config: {', '.join(differ[:6]) or e}); use the model settings it was trained with, "
                             "or start a new run with another --run-dir") from None
        model.load_state_dict(weights)

    def _eval_lpips(self):
        if not self.config.eval.lpips:
            return None
        if self.losses.lpips_net is not None:
            return self.losses.lpips_net
        try:
            return load_lpips(self.config.loss.lpips_weights, device=self.accelerator.device)
        except (FileNotFoundError, ValueError) as e:
            self.accelerator.print(f"evaluation without LPIPS: {e}")
            return None

    # --- optimizer state: full (unsharded) on the main process, also under FSDP ---
    def _optimizer_state(self) -> dict:
        if self.accelerator.distributed_type == DistributedType.FSDP:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(self.model, self.optimizer.optimizer, options=options)
        return self.optimizer.state_dict()

    def _load_optimizer(self, state: dict) -> None:
        if self.accelerator.distributed_type == DistributedType.FSDP:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
            set_optimizer_state_dict(self.model, self.optimizer.optimizer, state, options=options)
        else:
            self.optimizer.load_state_dict(state)

    # --- training ---
    def train_step(self) -> tuple[dict[str, torch.Tensor], float, bool]:
        """One optimizer step: (mean loss terms over micro-batches, gradient norm, skipped?)."""
        acc, o = self.accelerator, self.config.optim
        sums: dict[str, torch.Tensor] = {}
        norm, skipped = float("nan"), True
        for _ in range(self.accum):
            batch = next(self.batches).to(acc.device)
            with acc.accumulate(self.model):
                with acc.autocast():
                    out = forward_loss(self.model, self.losses, batch, self.config)
                acc.backward(out.loss)
                out.details["loss"] = out.loss.detach().float()
                for name, value in out.details.items():
                    sums[name] = sums.get(name, 0.0) + value / self.accum
                if acc.sync_gradients:
                    norm = float(acc.clip_grad_norm_(self.model.parameters(), o.grad_clip))
                    skipped = not (norm == norm and norm <= o.skip_grad_norm)  # NaN fails both tests
                    if not skipped:
                        self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # After a skipped first step torch warns that the scheduler stepped before the optimizer: intended.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.scheduler.step()
        self.step += 1
        self.skipped += skipped
        return sums, norm, skipped

    def fit(self) -> dict[str, float] | None:
        """Train to `optim.steps`; returns the final evaluation's metrics (None without held-out scenes)."""
        config, acc = self.config, self.accelerator
        o = config.optim
        bar = tqdm(total=o.steps, initial=self.step, disable=not (self.is_main and config.log.progress_bar),
                   dynamic_ncols=True)
        window_start, window_steps = time.perf_counter(), 0
        sums: dict[str, torch.Tensor] = {}
        while self.step < o.steps:
            lr = self.scheduler.get_last_lr()[0]
            details, norm, skipped = self.train_step()
            window_steps += 1
            for name, value in details.items():
                sums[name] = sums.get(name, 0.0) + value
            if skipped:
                acc.print(f"step {self.step}: skipped (gradient norm {norm:.4g}); {self.skipped} skipped so far")
            if (config.log.every and self.step % config.log.every == 0) or self.step == o.steps:
                elapsed = time.perf_counter() - window_start
                self._log(sums, window_steps, elapsed, lr, norm, bar)
                window_start, window_steps, sums = time.perf_counter(), 0, {}
            bar.update(1)
            if config.checkpoint.save_every and self.step % config.checkpoint.save_every == 0:
                self.save()
            if config.eval.every and self.step % config.eval.every == 0 and self.step < o.steps:
                self.run_eval()
        bar.close()
        if not (config.checkpoint.save_every and self.step % config.checkpoint.save_every == 0):
            self.save()  # the final state, unless the periodic save just wrote it
        results = self.run_eval()
        if self.tracker is not None:
            self.tracker.close()
        return results

    def _log(self, sums: dict, steps: int, elapsed: float, lr: float, norm: float, bar) -> None:
        names = sorted(sums)
        # A collective: every rank reaches it at the same steps. NaN terms of skipped steps stay NaN.
        means = self.accelerator.reduce(torch.stack([sums[n] for n in names]).to(self.accelerator.device) / steps,
                                        "mean").tolist()
        if not self.is_main:
            return
        o, d = self.config.optim, self.config.data
        scenes = steps * self.accum * o.batch_size * self.accelerator.num_processes
        values = {f"train/{n}": v for n, v in zip(names, means)}
        values.update({"train/lr": lr, "train/grad_norm": norm, "train/skipped_steps": self.skipped,
                       "perf/it_per_s": steps / elapsed,
                       "perf/views_per_s": scenes * (d.views.num_inputs + d.views.num_targets) / elapsed})
        self.tracker.scalars(values, self.step)
        bar.set_postfix(loss=f"{values['train/loss']:.4f}", psnr=f"{values.get('train/psnr', float('nan')):.2f}",
                        it_s=f"{values['perf/it_per_s']:.2f}", skipped=self.skipped)

    def run_eval(self) -> dict[str, float] | None:
        """Evaluate the held-out scenes; the main process logs and saves grids under run_dir/eval.

        Every rank runs the same scenes through the wrapped model: under FSDP the forward pass is a
        collective (each rank holds a shard of the weights), and under DDP the others would only wait.
        """
        if self.eval_data is None or not len(self.eval_data):
            return None
        save = self.is_main and self.config.eval.save_images
        out_dir = self.run_dir / "eval" / checkpoint_name(self.step) if save else None
        results, grids = evaluate(self.model, self.eval_data, self.config, self.accelerator.device, out_dir,
                                  self.eval_lpips, self.accelerator.autocast)
        if self.is_main:
            self.tracker.scalars({f"eval/{k}": v for k, v in results.items()}, self.step)
            self.tracker.image("eval/scene_000", grids[0], self.step)
            tqdm.write(f"step {self.step} eval: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
        return results

    def save(self) -> Path:
        acc = self.accelerator
        data = ckpt.CheckpointData(
            step=self.step,
            model_state=acc.get_state_dict(self.model),  # gathers FSDP shards; a collective
            state={"optimizer": self._optimizer_state(), "scheduler": self.scheduler.state_dict(),
                   "skipped": self.skipped, "data_position": self.samples_consumed},
            model_config=to_dict(self.model_config),
            train_config=to_dict(self.config),
        )
        return ckpt.save_checkpoint(self.run_dir / CHECKPOINTS, data, self.config.checkpoint.keep_last,
                                    rank=acc.process_index, barrier=acc.wait_for_everyone)


def main(argv: list[str], default_config: str | os.PathLike | None = None, prog: str = "train") -> Trainer:
    """Parse the command line, check what can be checked before any work, train.

    A user's mistake or an unusable input (bad data, an unreadable checkpoint, a full disk) ends the
    run with one `error:` line and exit code 2; `--debug` shows the traceback instead.
    """
    command = parse(argv, default_config, prog)
    try:
        preflight(command.config, command.resume)
        keep_freed_memory()
        trainer = Trainer(command.config, command.resume)
        trainer.fit()
    except (ValueError, OSError) as e:  # SceneError and CheckpointError are ValueErrors
        if command.debug:
            raise
        fail(_message(e))
    return trainer


def _message(error: Exception) -> str:
    """The message on one line. An error re-raised from a DataLoader worker carries the worker's
    traceback first and the original `Type: message` last."""
    text = str(error).strip() or type(error).__name__
    if "Original Traceback" in text:
        return text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.splitlines())
