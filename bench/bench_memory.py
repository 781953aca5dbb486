"""The memory estimate infer.py and evaluate.py check before a reconstruction, against measured peaks.

    python -m bench.bench_memory                                   # the default cases below
    python -m bench.bench_memory --cases paper:8:256x256 demo:16:512x288 --no-lpips --precision fp32

A case is NETWORK:VIEWS:WxH: a procedural room written as PNG frames (DL3DV layout, every 8th frame
held out, VIEWS inputs), reconstructed at WxH by the shipped demo checkpoint (`demo`, trained) or by
a network of a preset (`paper`, `small`, `tiny`) with random weights; `official` is `paper` pruned
as the official checkpoint is (the 40% most opaque kept). Each case runs in a fresh process that
keeps freed memory as the commands do; once the model is loaded and the scene opened it computes
the estimate (inference/memory.py), resets the resident-memory high-water mark
(/proc/self/clear_refs), runs `reconstruct` (views, forward pass, pruning, renders, metrics, PLY)
and reports how far the high-water mark rose above the resident size before. "tensors" is the
estimate's count of live tensor bytes in the largest phase, before the allocator's overhead.
The network runs at `--precision` (default auto: bf16 on CPUs with native bf16 matmuls), which the
estimate takes into account. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from model.precision import PRECISIONS

ROOT = Path(__file__).resolve().parents[1]
CASES = ["tiny:16:256x128", "small:32:256x256", "demo:8:512x288", "official:16:256x256", "paper:8:256x256"]


def resident(field: str) -> int:
    """VmRSS or VmHWM of this process, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def write_scene(case: str, out: Path) -> Path:
    """The case's procedural room, written where the measuring process will read it."""
    from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene

    _, views, size = case.split(":")
    width, height = (int(v) for v in size.split("x"))
    frames = int(views) + int(views) // 7 + 2  # every 8th held out, the rest are inputs
    return write_dl3dv_scene(generate_scene(ProceduralConfig(num_frames=frames, width=width, height=height, seed=7)),
                             out)


def measure(case: str, scene_dir: Path, lpips: bool, precision: str) -> dict:
    import torch

    from data.config import ResolutionConfig
    from data.open_scene import open_scene
    from model.pretrained import DEMO_CHECKPOINT, LoadedModel, load_model, official_recipe
    from inference.memory import phase_bytes, reconstruction_bytes
    from inference.reconstruct import Options, reconstruct, sample_plan
    from model.build import build_model
    from model.cpu_allocator import keep_freed_memory, release_freed_memory
    from model.precision import resolve_precision

    keep_freed_memory()
    torch.set_flush_denormal(True)
    network, views, size = case.split(":")
    width, height = (int(v) for v in size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        if network == "demo":
            loaded = load_model(DEMO_CHECKPOINT)
        elif network == "official":  # the released network's size and preprocessing (keeps 40%)
            loaded = LoadedModel(build_model("paper").eval(), "official", Path(network), *official_recipe())
        else:
            loaded = LoadedModel(build_model(network).eval(), "ours", Path(network),
                                 ResolutionConfig(mode="full", size=min(width, height)))
        scene = open_scene(scene_dir)
        options = Options(num_views=int(views), resolution=f"{width}x{height}", holdout=True, lpips=lpips,
                          precision=precision)
        device = torch.device("cpu")
        # The network's precision as `reconstruct` resolves it, set before the measurement: converting
        # the weights to bf16 frees memory the reconstruction would otherwise reuse unseen.
        precision = resolve_precision(options.precision, device)
        precision.apply(loaded.model)
        release_freed_memory()
        plan = replace(sample_plan(scene, loaded, options), network_dtype=precision.dtype)
        phases = phase_bytes(loaded.model.config, plan)
        estimate = reconstruction_bytes(loaded.model.config, plan)
        (Path(tmp) / "out").mkdir()
        before = resident("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from the current size
        reconstruct(scene, loaded, options, Path(tmp) / "out", device)
        measured = resident("VmHWM") - before
    largest = max(phases, key=phases.get)
    return {"case": case, "inputs": plan.inputs, "targets": plan.targets, "estimate": estimate, "measured": measured,
            "tensors": phases[largest], "largest": largest, "precision": str(plan.network_dtype).removeprefix("torch.")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=CASES, help="NETWORK:VIEWS:WxH (network: demo, official, paper, small, tiny)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS, as --no-lpips does")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="the network's, as infer.py --precision")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], Path(args.worker[1]), not args.no_lpips, args.precision)))
        return
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ]
    print("command: " + " ".join([*env, "python -m bench.bench_memory", *sys.argv[1:]]))
    print(f"{'case':>18} {'precision':>9} {'inputs':>6} {'targets':>7} {'tensors MB':>10} {'measured MB':>11} "
          f"{'estimate MB':>11} {'measured/tensors':>16} {'estimate/measured':>17}  largest phase")
    for case in args.cases:
        with tempfile.TemporaryDirectory() as tmp:  # written here, so the measuring process starts clean
            scene_dir = write_scene(case, Path(tmp) / "scene")
            command = [sys.executable, "-m", "bench.bench_memory", "--worker", case, str(scene_dir)]
            command += ["--precision", args.precision] + (["--no-lpips"] if args.no_lpips else [])
            out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['case']:>18} {r['precision']:>9} {r['inputs']:>6} {r['targets']:>7} {r['tensors'] / 2**20:>10.0f} "
              f"{r['measured'] / 2**20:>11.0f} {r['estimate'] / 2**20:>11.0f} {r['measured'] / r['tensors']:>16.2f} "
              f"{r['estimate'] / r['measured']:>17.2f}  {r['largest']}", flush=True)


if __name__ == "__main__":
    main()
