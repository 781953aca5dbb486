"""DL3DV-140 protocol over a folder of scenes: per-scene CSV and a summary in the paper's Table 1 format.

    longlrm-evaluate --scenes /data/DL3DV-Benchmark --checkpoint CKPT --num-views 32 --out results/dl3dv140

(`python evaluate.py ...` in a source checkout.)

Per scene: every 8th frame is a target, the inputs are the scene file's stored list (or, with
--input-index, the authors' DL3DV-140 list) when there is one, else chosen by KMeans (random_state 0,
cached) from the rest; Gaussians are predicted and pruned as the checkpoint records, the targets
rendered and scored (PSNR, SSIM, LPIPS-VGG on 8-bit images). Resumable: scenes already in
per_scene.csv with the same settings are skipped (a row cut short by an interrupted run is redone).
Every row records what its result depends on (the checkpoint's content hash, views, resolution,
preprocessing, input lists, refinement, precision); a table made with other settings is refused
rather than mixed into one summary.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import sys
from pathlib import Path

from inference.cli import (add_device_options, add_preprocessing_options, check_options, preprocessing_options,
                           resolve_device, run_command)

RESULTS = ["scene", "inputs", "targets", "width", "height", "psnr", "ssim", "lpips", "seconds", "gaussians",
           "input_frames"]
SETTINGS = ["checkpoint_sha256", "views", "resolution", "preprocessing", "input_index_sha256", "refine_steps",
            "precision"]
COLUMNS = RESULTS + SETTINGS
TABLE = "per_scene.csv"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=Path, required=True, help="folder holding one sub-folder per scene")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--num-views", type=int, default=32)
    p.add_argument("--resolution", help="short side or WxH, multiples of 16; default: the checkpoint's")
    add_preprocessing_options(p)
    p.add_argument("--refine-steps", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="where per_scene.csv and summary.md go (resumed if present)")
    add_device_options(p)
    p.add_argument("--no-lpips", action="store_true")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_command(run, parse_args(argv), logging.WARNING)


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from data.errors import SceneError
    from data.open_scene import find_scenes, open_scene
    from data.view_sampling import read_input_index
    from model.pretrained import load_model
    from inference.outputs import discard, output_folder, write_text
    from inference.reconstruct import Options, preprocessing, reconstruct, use_input_index
    from model.cpu_allocator import keep_freed_memory
    from model.precision import resolve_precision

    torch.set_flush_denormal(True)
    keep_freed_memory()
    check_options(args)
    if not args.scenes.is_dir():
        raise FileNotFoundError(f"--scenes {args.scenes} is not a folder")
    created = output_folder(args.out, allow_existing=True)
    try:
        table = args.out / TABLE
        done = read_table(table)
        scenes = find_scenes(args.scenes)
        if not scenes:
            raise FileNotFoundError(f"no scenes (transforms.json, opencv_cameras.json or COLMAP models) under "
                                    f"{args.scenes}")
        index = read_input_index(args.input_index) if args.input_index else None
        device = resolve_device(args.device)
        loaded = load_model(args.checkpoint, device)
        options = Options(num_views=args.num_views, holdout=True, resolution=args.resolution,
                          **preprocessing_options(args), refine_steps=args.refine_steps, lpips=not args.no_lpips,
                          precision=args.precision)
        used = preprocessing(loaded, options)
        precision = resolve_precision(options.precision, device)
        settings = {"checkpoint_sha256": sha256(loaded.path), "views": args.num_views,
                    "resolution": (args.resolution or "checkpoint").lower(),
                    "preprocessing": json.dumps(used.as_dict(), sort_keys=True),
                    "input_index_sha256": sha256(args.input_index) if args.input_index else "",
                    "refine_steps": args.refine_steps, "precision": precision.name}
        settings = {k: str(v) for k, v in settings.items()}
        check_same_settings(done, settings, table)
        failures = []
        for path in tqdm(scenes, desc="scenes", unit="scene"):
            name = str(path.relative_to(args.scenes))
            if name in done:
                continue
            try:
                scene = open_scene(path)
                if index is not None:
                    use_input_index(scene, index, args.input_index)
                result = reconstruct(scene, loaded, options, device=device)  # scored in memory, nothing written
            except SceneError as err:
                failures.append(f"{name}: {err}")
                continue
            metrics = result.refined_metrics if args.refine_steps else result.metrics
            row = {"scene": name, "inputs": result.num_inputs, "targets": result.num_targets,
                   "width": result.size.width, "height": result.size.height,
                   "seconds": round(result.seconds["predict"] + result.seconds.get("refine", 0.0), 3),
                   "gaussians": result.gaussians.count, "input_frames": result.input_frames,
                   **{k: metrics[k] for k in ("psnr", "ssim", "lpips")}, **settings}
            append_row(table, row)
            done[name] = row
        for failure in failures:
            print(f"skipped {failure}", file=sys.stderr)
        if not done:
            raise ValueError(f"no scene was evaluated: all {len(scenes)} under {args.scenes} were skipped (reasons "
                             "above); fix them or point --scenes at usable scenes")
    except BaseException:
        discard(created)  # only if nothing was written into it
        raise
    summary = (_summary(list(done.values()), args, settings, len(failures))
               + "\npreprocessing: " + json.dumps(used.as_dict()) + "\n")
    try:
        write_text(summary, args.out / "summary.md")
    except OSError as err:
        raise OSError(f"writing {args.out / 'summary.md'} failed ({err.strerror}); free space on its disk and rerun "
                      "(every scene is in per_scene.csv: nothing is evaluated again)") from None
    print(summary)
    return 0


def sha256(path: Path) -> str:
    """Content hash of a file (the first 16 hex digits): what identifies a checkpoint, whatever its name."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_table(path: Path) -> dict[str, dict]:
    """The rows of a per_scene.csv by scene. A last row cut short (no line end: the run was
    interrupted while writing it) is removed from the file so its scene is evaluated again; a file
    this program did not write is refused and left as it is."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]  # up to the last line end
    header = ",".join(COLUMNS).encode()
    foreign = f"{path} was not written by this version of evaluate.py"
    try:
        lines = complete.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{foreign} (it is not text); choose another --out or move it away") from None
    if lines and next(csv.reader(lines[:1])) != COLUMNS or not lines and not header.startswith(data):
        raise ValueError(f"{foreign} (its columns are not {COLUMNS}); choose another --out or move it away")
    if len(complete) < len(data):
        with path.open("r+b") as f:
            f.truncate(len(complete))
        logging.getLogger("evaluate").warning("%s: the last row was cut short by an interrupted run; its scene is "
                                              "evaluated again", path)
    rows = {}
    for number, row in enumerate(csv.DictReader(lines, restkey="extra"), start=2):
        if "extra" in row or any(row[k] is None for k in COLUMNS) or not _is_number(row["psnr"]):
            raise ValueError(f"line {number} of {path} is damaged ({lines[number - 1][:80]!r}); delete that line "
                             "to evaluate its scene again")
        rows[row["scene"]] = row
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_same_settings(done: dict[str, dict], settings: dict[str, str], table: Path) -> None:
    """Refuse to add rows of these settings to a table holding rows of others: one summary would mix them."""
    for row in done.values():
        differ = [f"{key} {row[key] or '(none)'} there, {settings[key] or '(none)'} now" for key in SETTINGS
                  if row[key] != settings[key]]
        if differ:
            raise ValueError(f"{table} holds results made with other settings ({'; '.join(differ)}); one table must "
                             "not mix them: choose another --out, or rerun with the settings it was made with")


def append_row(table: Path, row: dict) -> None:
    """Add one row (and the header to a new table), on disk before the next scene starts."""
    new = not table.is_file() or table.stat().st_size == 0
    try:
        with table.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise OSError(f"writing {table} failed ({err.strerror}); free space on its disk or choose another --out "
                      "(the rows written so far are kept, and a rerun resumes from them)") from None


def _summary(rows: list[dict], args, settings: dict[str, str], skipped: int) -> str:
    def mean(key):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "None")]
        return sum(values) / len(values) if len(values) == len(rows) else math.nan  # a mean of some scenes misleads

    def show(value, digits):
        return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"

    method = args.checkpoint.name + (f" + {args.refine_steps}-step refinement" if args.refine_steps else "")
    return (
        "| views | method | time | scenes | PSNR / SSIM / LPIPS |\n|---|---|---|---|---|\n"
        f"| {args.num_views} | {method} | {mean('seconds'):.2f} s | {len(rows)} | "
        f"{mean('psnr'):.2f} / {mean('ssim'):.3f} / {show(mean('lpips'), 3)} |\n"
        f"\nNetwork in {settings['precision']}, rendering in fp32; checkpoint sha256 {settings['checkpoint_sha256']}..."
        + (f"; {skipped} scene(s) skipped" if skipped else "") + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
