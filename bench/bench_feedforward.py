"""The headline comparison on our data: one feed-forward pass of the demo checkpoint against classic
per-scene 3DGS optimisation from scratch given the same CPU wall time, and what refinement adds.

    python -m bench.bench_feedforward [--scenes 3] [--classic-steps 1500] [--refine-steps 200]

Scenes are procedural rooms generated like the demo scene but with seeds (3,000,000 + i) that no
training run, trainer evaluation or demo uses. Every method gets the same 8 input views (the views
`infer.py --holdout` picks, at the checkpoint's resolution) and is scored on the same held-out views
(every 8th frame), rendered the same way (white background, near plane 0.01), by PSNR and SSIM.

- feed-forward: the network's forward pass (timed; pruning excluded, it keeps everything here).
- classic 3DGS: graphdeco's full recipe (classic preset: densification, opacity resets, SH warm-up,
  the 30k-step schedules of which the first --classic-steps run) on the 8 input views, from two starts:
  random points in the cameras' frusta (all one has with posed photos alone) and 2,000 points sampled
  on the true surfaces with their pixel colours (a structure-from-motion cloud without its noise:
  an oracle advantage for the baseline). Held-out views are scored every --eval-every steps, and
  each budget reads the last score whose optimisation time fits in it (evaluation time excluded).
- refined: the prediction polished by --refine-steps of the short preset, on the same 8 views.
Times are CPU wall time on this machine, all methods in one process, one after the other.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from bench.bench_refine import surface_points
from data.procedural import generate_scene
from data.scene import Scene
from model.pretrained import DEMO_CHECKPOINT, load_model
from inference.demo import DEMO_CONFIG
from inference.reconstruct import Options, scene_sample
from model.cameras import Cameras
from refine import RefineConfig, evaluate, from_points, random_init, refine

ROOT = Path(__file__).resolve().parents[1]
FIRST_SEED = 3_000_000
BUDGETS = (1, 10, 100)  # multiples of the feed-forward time given to the classic baseline
SFM_POINTS = 2000
BACKGROUND = torch.ones(3)


def oracle_points(generated, sample, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` true-surface points seen by the input frames, moved into the sample's normalised
    frame (a similarity), with their colours: points [count, 3], colours [count, 3]."""
    cfg = generated.config
    cams = Cameras(generated.intrinsics, generated.c2w, cfg.width, cfg.height)
    points, colors = surface_points(generated, cams, sample.input_indices.tolist(), count, seed)
    m = sample.normalization.float()  # world -> normalised frame
    return points @ m[:3, :3].T + m[:3, 3], colors


def at_budget(evals: list[dict], seconds: float) -> dict:
    """The last held-out score reached within `seconds` of optimisation."""
    return [e for e in evals if e["seconds"] <= seconds][-1]


def crossover(evals: list[dict], psnr: float) -> float:
    """Optimisation seconds until the held-out PSNR first reaches `psnr` (inf if it never does)."""
    return next((e["seconds"] for e in evals if e["psnr"] >= psnr), math.inf)


def run_scene(index: int, loaded, args) -> dict:
    seed = FIRST_SEED + index
    generated = generate_scene(DEMO_CONFIG, seed=seed)
    scene = Scene.from_arrays(f"procedural-{seed}", generated.images, generated.intrinsics, generated.c2w)
    selection, sample = scene_sample(scene, loaded, Options(num_views=loaded.num_views or 8, holdout=True))
    inputs, targets = selection.inputs, selection.targets
    images, cameras = sample.input_images, sample.input_cameras
    held_images, held_cameras = sample.target_images, sample.target_cameras

    with torch.inference_mode():
        loaded.model(images[None], cameras.reshape(1, len(inputs)))  # warm-up: first-call allocations
        tic = time.perf_counter()
        predicted = loaded.model(images[None], cameras.reshape(1, len(inputs))).gaussians.scene(0)
        ff_seconds = time.perf_counter() - tic
    ff = evaluate(predicted, held_images, held_cameras, predicted.sh_degree, BACKGROUND, "cpu")

    short = RefineConfig.preset("short", steps=args.refine_steps, backend="cpu")
    refined, history = refine(predicted, images, cameras, short, progress=False)
    refined_scores = evaluate(refined, held_images, held_cameras, refined.sh_degree, BACKGROUND, "cpu")
    refine_seconds = history.seconds[-1]

    # The classic runs train on the input views and score the held-out ones as they go.
    all_images = torch.cat([images, held_images])
    all_cameras = Cameras(torch.cat([cameras.intrinsics, held_cameras.intrinsics]),
                          torch.cat([cameras.c2w, held_cameras.c2w]), cameras.width, cameras.height)
    held = list(range(len(inputs), len(inputs) + len(targets)))
    classic = RefineConfig.preset("classic", steps=args.classic_steps, backend="cpu", eval_every=args.eval_every,
                                  position_lr_max_steps=30_000)
    depth = generated.depth[sample.input_indices] * sample.normalization[:3, :3].det().abs().pow(1 / 3).float()
    starts = {
        "random": random_init(cameras, SFM_POINTS * 5, near=float(depth.min()), far=float(depth.max()),
                              generator=torch.Generator().manual_seed(seed)),
        "oracle": from_points(*oracle_points(generated, sample, SFM_POINTS, seed)),
    }
    curves = {}
    for name, start in starts.items():
        _, run = refine(start, all_images, all_cameras, classic, holdout=held, progress=False)
        curves[name] = run.evals
    return {"seed": seed, "ff_seconds": ff_seconds, "ff": ff, "refine_seconds": refine_seconds,
            "refined": refined_scores, "curves": curves, "gaussians": predicted.count}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def report(results: list[dict], args) -> None:
    t_ff = mean([r["ff_seconds"] for r in results])
    t_ref = mean([r["refine_seconds"] for r in results])
    rows = [("feed-forward (demo checkpoint)", t_ff, [r["ff"] for r in results])]
    for name, label in (("random", "random points"), ("oracle", f"{SFM_POINTS} true-surface points")):
        for k in BUDGETS:
            rows.append((f"classic 3DGS from {label}, {k}x the feed-forward time", k * t_ff,
                         [at_budget(r["curves"][name], k * r["ff_seconds"]) for r in results]))
    rows.append((f"feed-forward + {args.refine_steps} refinement steps", t_ff + t_ref, [r["refined"] for r in results]))
    for name, label in (("random", "random points"), ("oracle", f"{SFM_POINTS} true-surface points")):
        rows.append((f"classic 3DGS from {label}, same time as feed-forward + refinement", t_ff + t_ref,
                     [at_budget(r["curves"][name], r["ff_seconds"] + r["refine_seconds"]) for r in results]))
    print(f"\n{len(results)} unseen procedural scenes (seeds {results[0]['seed']}..{results[-1]['seed']}), "
          f"8 input views, {results[0]['gaussians']} Gaussians predicted, mean over scenes of the held-out mean")
    print("| method | CPU seconds | PSNR | SSIM |")
    print("|---|---:|---:|---:|")
    for label, seconds, scores in rows:
        print(f"| {label} | {seconds:.2f} | {mean([s['psnr'] for s in scores]):.2f} | "
              f"{mean([s['ssim'] for s in scores]):.3f} |")
    for name, label in (("random", "random points"), ("oracle", "true-surface points")):
        for target, what in (("ff", "the prediction"), ("refined", "the refined prediction")):
            times = [crossover(r["curves"][name], r[target]["psnr"]) for r in results]
            shown = ", ".join("never" if math.isinf(t) else f"{t:.1f} s" for t in times)
            print(f"classic from {label} reaches the PSNR of {what} after: {shown} "
                  f"(per scene, within {args.classic_steps} steps)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT))
    p.add_argument("--scenes", type=int, default=3)
    p.add_argument("--classic-steps", type=int, default=1500)
    p.add_argument("--refine-steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=10)
    args = p.parse_args(argv)
    print("command: python -m bench.bench_feedforward " + " ".join(sys.argv[1:] if argv is None else argv))
    shown = Path(args.checkpoint).resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, checkpoint {shown}")
    torch.set_flush_denormal(True)
    loaded = load_model(args.checkpoint)
    results = []
    for i in range(args.scenes):
        tic = time.time()
        results.append(run_scene(i, loaded, args))
        r = results[-1]
        print(f"scene {r['seed']}: feed-forward {r['ff']['psnr']:.2f} dB in {r['ff_seconds']:.2f} s, refined "
              f"{r['refined']['psnr']:.2f} dB (+{r['refine_seconds']:.1f} s), classic best "
              + ", ".join(f"{k} {max(e['psnr'] for e in c):.2f} dB" for k, c in r["curves"].items())
              + f"; {time.time() - tic:.0f} s", flush=True)
    report(results, args)


if __name__ == "__main__":
    main()
