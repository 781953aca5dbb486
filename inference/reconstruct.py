"""One scene in, everything out: views -> Gaussians -> pruned PLY, held-out renders, metrics, video.

The network sees poses normalised on its input cameras; renders and refinement happen in that
frame, and the Gaussians are mapped back to the scene's own world frame only for the PLY.
Held-out views stream: each is rendered, scored, saved and dropped before the next, so memory does
not grow with their number. Every stage is timed, so the stage times add up to the run's total.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from data.batch import Sample
from data.normalize import denormalize_gaussians
from data.scene import Scene
from model.cameras import Cameras
from model.gaussians import Gaussians
from model.ply import save_ply
from train.render_targets import render_targets

from .camera_path import smooth_path
from .checkpoint import LoadedModel
from .evaluation import ViewScores, mean_metrics
from .outputs import save_png, write_json, write_video
from .timer import StageTimer
from .views import Resolution, choose_views, load_sample

log = logging.getLogger("inference")

# A checkpoint predicts Gaussians of the size (in pixels) it was trained at: beyond this ratio of
# short sides, renders blur (or leave gaps) and refinement slows down with the larger footprints.
RESOLUTION_TOLERANCE = 1.5


@dataclass
class Options:
    num_views: int = 32
    resolution: Resolution | None = None  # None: what the checkpoint was trained at
    holdout: bool = False  # hold out every 8th frame and report metrics on it
    min_opacity: float | None = 0.001
    keep_ratio: float | None = None
    refine_steps: int = 0
    robust: bool = False
    ply_sh_degree: int | None = 3  # PLY SH degree (higher bands zero); None: the Gaussians' own
    video: bool = False
    video_frames: int = 120
    lpips: bool = True
    backend: str = "auto"  # renderer backend


@dataclass
class Result:
    out_dir: Path
    num_inputs: int
    num_targets: int
    size: tuple[int, int]  # (height, width) the network saw
    predicted: int
    kept: int
    seconds: dict[str, float]
    metrics: dict[str, float | None] = field(default_factory=dict)
    refined: int | None = None  # Gaussians after refinement
    refined_metrics: dict[str, float | None] = field(default_factory=dict)


def render_view(batch: Gaussians, cameras: Cameras, t: int, backend: str) -> Tensor:
    """Gaussians [1, N] into camera t of cameras [T] -> image [H, W, 3]."""
    return render_targets(batch, cameras[None, t:t + 1], checkpoint_views=False, backend=backend)[0, 0]


def render_views(gaussians: Gaussians, cameras: Cameras, backend: str, what: str) -> Tensor:
    """One scene's Gaussians [N] into cameras [T] -> images [T, H, W, 3], one view at a time."""
    batch = Gaussians.stack([gaussians])
    return torch.stack([render_view(batch, cameras, t, backend)
                        for t in tqdm(range(cameras.shape[0]), desc=what, unit="view", leave=False)])


def score_views(gaussians: Gaussians, cameras: Cameras, targets: Tensor, files: list[Path], with_lpips: bool,
                backend: str, timer: StageTimer, what: str) -> dict[str, list[float | None]]:
    """Render, score and save each held-out view in turn (cameras [T], targets [T, H, W, 3] on the CPU,
    files [T] PNG paths for the renders): per-view metrics of the 8-bit renders."""
    batch = Gaussians.stack([gaussians])
    scores = ViewScores(with_lpips)
    for t in tqdm(range(len(files)), desc=what, unit="view", leave=False):
        with timer.stage("render"):
            pred = render_view(batch, cameras, t, backend).cpu()
        with timer.stage("metrics"):
            scores.add(pred, targets[t])
        with timer.stage("save"):
            save_png(pred, files[t])
    return scores.per_view


def predict(loaded: LoadedModel, sample: Sample, options: Options, device: torch.device,
            timer: StageTimer) -> tuple[Gaussians, int]:
    """One forward pass on the sample's inputs, then pruning: (kept Gaussians [N], predicted count)."""
    images = sample.input_images.to(device)[None]  # [1, V, H, W, 3]
    cameras = sample.input_cameras.to(device).reshape(1, sample.input_images.shape[0])
    with timer.stage("predict"), torch.inference_mode():
        predicted = loaded.model(images, cameras).gaussians.scene(0)
    with timer.stage("prune"):
        return predicted.prune(options.min_opacity, options.keep_ratio), predicted.count


def reconstruct(scene: Scene, loaded: LoadedModel, options: Options, out_dir: Path, device: torch.device,
                timer: StageTimer | None = None) -> Result:
    """timer: the run's timer, started by the caller (so its setup counts); None starts one here."""
    timer = timer or StageTimer(device)
    resolution = options.resolution or checkpoint_resolution(loaded)
    with timer.stage("load views"):
        inputs, targets = choose_views(scene, options.num_views, options.holdout)
        sample = load_sample(scene, inputs, targets, resolution, loaded.scene_scale)
    height, width = sample.input_images.shape[1:3]
    log.info("%d input views, %d held-out views at %dx%d", len(inputs), len(targets), width, height)
    mismatch = resolution_mismatch(loaded, height, width)
    if mismatch:
        log.warning("warning: %s", mismatch)

    gaussians, predicted = predict(loaded, sample, options, device, timer)
    result = Result(out_dir, len(inputs), len(targets), (height, width), predicted, gaussians.count, timer.seconds)

    renders = out_dir / "renders"
    names = [Path(scene.names[i]).stem for i in targets]
    target_cams = sample.target_cameras.to(device)
    per_view, refined_per_view = {}, {}
    if targets:
        renders.mkdir(exist_ok=True)
        with timer.stage("save"):
            for name, t in zip(names, sample.target_images):
                save_png(t, renders / f"{name}_gt.png")
        per_view = score_views(gaussians, target_cams, sample.target_images, [renders / f"{n}_pred.png" for n in names],
                               options.lpips, options.backend, timer, "held-out views")
        result.metrics = mean_metrics(per_view)
    if options.refine_steps > 0:
        with timer.stage("refine"):
            from refine import RefineConfig, refine

            config = RefineConfig.preset("short", steps=options.refine_steps, robust=options.robust,
                                         backend=options.backend)
            gaussians, _ = refine(gaussians, sample.input_images.to(device), sample.input_cameras.to(device), config)
        result.refined = gaussians.count
        if result.refined != result.kept:
            log.info("refinement changed the Gaussians from %d to %d", result.kept, result.refined)
        if targets:
            refined_per_view = score_views(gaussians, target_cams, sample.target_images,
                                           [renders / f"{n}_refined.png" for n in names], options.lpips,
                                           options.backend, timer, "held-out views, refined")
            result.refined_metrics = mean_metrics(refined_per_view)
    if options.video:
        with timer.stage("video"):
            order = torch.argsort(sample.input_indices)
            path = smooth_path(sample.input_cameras.c2w[order], options.video_frames).float()
            path_cams = Cameras(sample.input_cameras.intrinsics[:1].expand(len(path), 4), path, width, height)
            frames = render_views(gaussians, path_cams.to(device), options.backend, "rendering video").cpu()
            write_video(list(frames), out_dir / "video.mp4")

    with timer.stage("save"):
        world = denormalize_gaussians(gaussians.to("cpu"), sample.normalization)
        save_ply(world, out_dir / "gaussians.ply", sh_degree=options.ply_sh_degree)
        write_json(_cameras_json(scene, sample), out_dir / "cameras.json")
    metrics = {"scene": scene.scene_id, "num_inputs": len(inputs), "num_targets": len(targets),
               "width": width, "height": height, "gaussians_predicted": result.predicted,
               "gaussians_kept": result.kept, "seconds": {**timer.seconds, "total": timer.elapsed()},
               "mean": result.metrics}
    if mismatch:
        metrics["warnings"] = [mismatch]
    if targets:
        metrics["per_view"] = [{"frame": scene.names[f], **{k: v[i] for k, v in per_view.items()}}
                               for i, f in enumerate(targets)]
    if options.refine_steps > 0:
        metrics["refine"] = {"steps": options.refine_steps, "robust": options.robust}
        metrics["gaussians_refined"] = result.refined
    if result.refined_metrics:
        metrics["refined_mean"] = result.refined_metrics
        metrics["refined_per_view"] = [{"frame": scene.names[f], **{k: v[i] for k, v in refined_per_view.items()}}
                                       for i, f in enumerate(targets)]
    write_json(metrics, out_dir / "metrics.json")
    return result


def resolution_mismatch(loaded: LoadedModel, height: int, width: int) -> str | None:
    """A sentence when (height, width) is far from the checkpoint's training resolution, else None."""
    trained = int(loaded.resolution.get("size", 0)) if loaded.resolution else 0
    if trained <= 0:
        return None
    ratio = min(height, width) / trained
    if 1 / RESOLUTION_TOLERANCE < ratio < RESOLUTION_TOLERANCE:
        return None
    return (f"inference at {width}x{height} is {ratio:.2g}x the resolution this checkpoint was trained at "
            f"(short side {trained}): it predicts Gaussians sized for that resolution, so expect "
            f"{'blur and slower rendering and refinement' if ratio > 1 else 'gaps and lost detail'}; "
            f"--resolution {16 * max(1, round(trained / 16))} matches its training")


def checkpoint_resolution(loaded: LoadedModel) -> Resolution:
    r = loaded.resolution
    if not r:
        return Resolution(mode="full", size=540)
    return Resolution(mode=r.get("mode", "full"), size=int(r.get("size", 540)), multiple=int(r.get("multiple", 16)))


def _cameras_json(scene: Scene, sample) -> dict:
    """Cameras as used (intrinsics at the network's resolution) in the scene's world frame, OpenCV axes."""
    def entries(indices: Tensor, cams: Cameras) -> list[dict]:
        return [{"frame": scene.names[int(f)], "index": int(f), "c2w": scene.c2w[int(f)].tolist(),
                 "fx": float(k[0]), "fy": float(k[1]), "cx": float(k[2]), "cy": float(k[3])}
                for f, k in zip(indices, cams.intrinsics)]
    return {
        "convention": "OpenCV axes (x right, y down, z forward), c2w camera-to-world, pixel centres at +0.5",
        "width": sample.input_cameras.width, "height": sample.input_cameras.height,
        "world_to_normalized": sample.normalization.tolist(),
        "inputs": entries(sample.input_indices, sample.input_cameras),
        "targets": entries(sample.target_indices, sample.target_cameras),
    }
