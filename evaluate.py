"""DL3DV-140 protocol over a folder of scenes: per-scene CSV and a summary in the paper's Table 1 format.

    python evaluate.py --scenes /data/DL3DV-Benchmark --checkpoint CKPT --num-views 32 --out results/dl3dv140

Per scene: every 8th frame is a target, the inputs are the scene file's stored list (or, with
--input-index, the authors' DL3DV-140 list) when there is one, else chosen by KMeans (random_state 0,
cached) from the rest; Gaussians are predicted and pruned as the checkpoint records, the targets
rendered and scored (PSNR, SSIM, LPIPS-VGG on 8-bit images). Resumable: scenes already in
per_scene.csv are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

from infer import _device, add_preprocessing_options, check_options, preprocessing_options

COLUMNS = ["scene", "inputs", "targets", "width", "height", "psnr", "ssim", "lpips", "seconds", "gaussians",
           "input_frames"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=Path, required=True, help="folder holding one sub-folder per scene")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--num-views", type=int, default=32)
    p.add_argument("--resolution", help="short side or WxH, multiples of 16; default: the checkpoint's")
    add_preprocessing_options(p)
    p.add_argument("--refine-steps", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="where per_scene.csv and summary.md go (resumed if present)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-lpips", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from data.errors import SceneError
    from data.open_scene import find_scenes, open_scene
    from data.view_sampling import read_input_index
    from inference.checkpoint import load_checkpoint
    from inference.evaluation import image_metrics, mean_metrics
    from inference.reconstruct import (Options, parse_resolution, predict, preprocessing, render_views, scene_sample,
                                       use_input_index)
    from inference.timer import StageTimer
    from model.cpu_allocator import keep_freed_memory

    torch.set_flush_denormal(True)
    keep_freed_memory()
    if not args.scenes.is_dir():
        raise FileNotFoundError(f"--scenes {args.scenes} is not a folder")
    scenes = find_scenes(args.scenes)
    if not scenes:
        raise FileNotFoundError(f"no scenes (transforms.json, opencv_cameras.json or COLMAP models) under {args.scenes}")
    check_options(args)
    if args.resolution:
        parse_resolution(args.resolution)  # a bad value fails before any work
    index = read_input_index(args.input_index) if args.input_index else None
    device = _device(args.device)
    loaded = load_checkpoint(args.checkpoint, device)
    options = Options(num_views=args.num_views, holdout=True, resolution=args.resolution, **preprocessing_options(args))
    used = preprocessing(loaded, options)
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "per_scene.csv"
    done = _read_rows(table)
    failures = []
    with table.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if not done:
            writer.writeheader()
        for path in tqdm(scenes, desc="scenes", unit="scene"):
            name = str(path.relative_to(args.scenes))
            if name in done:
                continue
            try:
                scene = open_scene(path)
                if index is not None:
                    use_input_index(scene, index, args.input_index)
                selection, sample = scene_sample(scene, loaded, options)
            except SceneError as err:
                failures.append(f"{name}: {err}")
                continue
            inputs, targets = selection.inputs, selection.targets
            timer = StageTimer(device)
            gaussians, _ = predict(loaded, sample, used, device, timer)
            if args.refine_steps:
                from refine import RefineConfig, refine

                config = RefineConfig.preset("short").replace(steps=args.refine_steps)
                with timer.stage("refine"):
                    gaussians, _ = refine(gaussians, sample.input_images.to(device), sample.input_cameras.to(device),
                                          config, progress=False)
            pred = render_views(gaussians, sample.target_cameras.to(device), options.backend, "rendering").cpu()
            metrics = mean_metrics(image_metrics(pred, sample.target_images, not args.no_lpips))
            height, width = sample.input_images.shape[1:3]
            row = {"scene": name, "inputs": len(inputs), "targets": len(targets), "width": width, "height": height,
                   "seconds": round(timer.seconds["predict"] + timer.seconds.get("refine", 0.0), 3),
                   "gaussians": gaussians.count, "input_frames": selection.source,
                   **{k: metrics[k] for k in ("psnr", "ssim", "lpips")}}
            writer.writerow(row)
            f.flush()
            done[name] = row
    summary = _summary(list(done.values()), args) + "\npreprocessing: " + json.dumps(used.as_dict()) + "\n"
    (args.out / "summary.md").write_text(summary)
    print(summary)
    for failure in failures:
        print(f"skipped {failure}", file=sys.stderr)
    return 0


def _read_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = {row["scene"]: row for row in reader}
    if reader.fieldnames is not None and reader.fieldnames != COLUMNS:
        raise ValueError(f"{path} has the columns {reader.fieldnames}, not {COLUMNS}: it was written by another "
                         "version; choose another --out or move it away to start over")
    return rows


def _summary(rows: list[dict], args) -> str:
    def mean(key):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "None")]
        return sum(values) / len(values) if values else float("nan")

    method = args.checkpoint.name + (f" + {args.refine_steps}-step refinement" if args.refine_steps else "")
    return (
        "| views | method | time | scenes | PSNR / SSIM / LPIPS |\n|---|---|---|---|---|\n"
        f"| {args.num_views} | {method} | {mean('seconds'):.2f} s | {len(rows)} | "
        f"{mean('psnr'):.2f} / {mean('ssim'):.3f} / {mean('lpips'):.3f} |\n"
    )


if __name__ == "__main__":
    sys.exit(main())
