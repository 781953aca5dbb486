"""One scene in, everything out: views -> Gaussians -> pruned PLY, held-out renders, metrics, video.

The network sees poses normalised on its input cameras; renders and refinement happen in that
frame, and the Gaussians are mapped back to the scene's own world frame only for the PLY.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from data.batch import Sample
from data.config import DataConfig, ViewConfig
from data.errors import SceneError
from data.normalize import denormalize_gaussians
from data.pipeline import capture_sample
from data.resize import ASPECT_TOLERANCE, aspect_change, inference_size
from data.scene import Scene
from data.view_sampling import Selection, eval_targets, to_scene_order
from model.cameras import Cameras
from model.gaussians import Gaussians
from model.ply import save_ply
from model.precision import resolve_precision

from .camera_path import smooth_path
from model.pretrained import LoadedModel, Preprocessing
from .evaluation import image_metrics, mean_metrics
from .memory import Plan, available_bytes, check_memory
from .outputs import save_png, write_json, write_video
from .timer import StageTimer

log = logging.getLogger("inference")

HOLDOUT_EVERY = 8  # the DL3DV-140 protocol's held-out fold
RESOLUTION_MULTIPLE = 16  # --resolution sides: the paper network's patch (8) times its token merge (2)


@dataclass
class Options:
    num_views: int = 32
    resolution: str | None = None  # a short side ("544") or WxH ("960x544"); None: the checkpoint's rule
    holdout: bool = False  # hold out every 8th frame and report metrics on it
    # Overrides of the checkpoint's Preprocessing; None keeps the checkpoint's value.
    resample: str | None = None
    scene_scale: float | None = None
    keep_ratio: float | None = None
    random_ratio: float | None = None
    prune_seed: int | None = None
    min_opacity: float | None = None
    refine_steps: int = 0
    robust: bool = False
    video: bool = False
    video_frames: int = 120
    lpips: bool = True
    backend: str = "auto"  # renderer backend
    precision: str = "auto"  # the network's: auto | fp32 | bf16 (model/precision.py)


@dataclass
class Result:
    out_dir: Path
    num_inputs: int
    num_targets: int
    size: tuple[int, int]  # (height, width) the network saw
    precision: str  # the network's, as resolved for the device: "fp32" or "bf16"
    predicted: int
    kept: int
    seconds: dict[str, float]
    metrics: dict[str, float | None] = field(default_factory=dict)
    refined_metrics: dict[str, float | None] = field(default_factory=dict)


def render_views(gaussians: Gaussians, cameras: Cameras, backend: str, what: str) -> Tensor:
    """One scene's Gaussians [N] into cameras [T] -> images [T, H, W, 3], with a progress bar."""
    return torch.cat([gaussians.render(cameras[t:t + 1], backend=backend)
                      for t in tqdm(range(cameras.shape[0]), desc=what, unit="view", leave=False)])


def parse_resolution(text: str) -> int | tuple[int, int]:
    """`540` (a short side: whole frames keep their aspect) or `960x544` (width x height) -> the short
    side, or (height, width); multiples of 16."""
    try:
        if "x" in text.lower():
            width, height = (int(v) for v in text.lower().split("x"))
        else:
            width = height = int(text)
    except ValueError:
        raise ValueError(f"--resolution {text!r} must be a short side like 544 or a size like 960x544") from None
    if width <= 0 or height <= 0 or width % RESOLUTION_MULTIPLE or height % RESOLUTION_MULTIPLE:
        raise ValueError(f"--resolution {text} must use positive multiples of {RESOLUTION_MULTIPLE} (the network's "
                         "patch size times its token merge), e.g. 960x544 or 544")
    return (height, width) if "x" in text.lower() else height


def preprocessing(loaded: LoadedModel, options: Options) -> Preprocessing:
    """The checkpoint's recorded preprocessing with the options' overrides."""
    return loaded.preprocessing.override(resample=options.resample, scene_scale=options.scene_scale,
                                         keep_ratio=options.keep_ratio, random_ratio=options.random_ratio,
                                         prune_seed=options.prune_seed, min_opacity=options.min_opacity)


def scene_sample(scene: Scene, loaded: LoadedModel, options: Options) -> tuple[Selection, Sample]:
    """What the network is fed for `scene`: the views infer.py and evaluate.py choose, made as the
    checkpoint was trained (data/pipeline.py `capture_sample`)."""
    config, size = _sample_config(scene, loaded, options)
    if size is not None and aspect_change(size, scene.height, scene.width) > ASPECT_TOLERANCE:
        log.warning("--resolution %s stretches the %dx%d frames to another aspect", options.resolution,
                    scene.width, scene.height)
    return capture_sample(scene, config, options.holdout, size)


def check_sample_memory(scene: Scene, loaded: LoadedModel, options: Options, device: torch.device) -> None:
    """Refuse, before a frame is decoded, a reconstruction of `scene` that the memory available on
    `device` cannot hold, naming one that fits (inference/memory.py)."""
    config = loaded.model.config
    check_memory(config, sample_plan(scene, loaded, options), available_bytes(device),
                 math.lcm(RESOLUTION_MULTIPLE, config.output_patch_size))


def sample_plan(scene: Scene, loaded: LoadedModel, options: Options) -> Plan:
    """The views and size `scene_sample` will make, known before a frame is decoded; the input count
    is an upper bound (a scene's stored list may hold fewer)."""
    config, size = _sample_config(scene, loaded, options)
    height, width = size or inference_size(scene.height, scene.width, config.resolution)[0]
    targets = len(eval_targets(len(scene), HOLDOUT_EVERY if options.holdout else None))
    return Plan(min(options.num_views, len(scene) - targets), targets, height, width, scene.height, scene.width,
                scene.distortion is not None, preprocessing(loaded, options).keep_ratio or 1.0, options.lpips,
                options.video_frames if options.video else 0)


def _sample_config(scene: Scene, loaded: LoadedModel, options: Options) -> tuple[DataConfig, tuple[int, int] | None]:
    """The sample recipe for `scene` and the (H, W) --resolution asks for (None: the recipe's size)."""
    p = preprocessing(loaded, options)
    resolution, size = replace(loaded.resolution, resample=p.resample), None
    if options.resolution:
        parsed = parse_resolution(options.resolution)
        if isinstance(parsed, tuple):
            size = parsed
        else:
            resolution = replace(resolution, mode="full", size=parsed)
    config = DataConfig(views=ViewConfig(num_inputs=options.num_views, num_targets=0, eval_every=HOLDOUT_EVERY),
                        resolution=resolution, scene_scale=p.scene_scale)
    return config, size


def use_input_index(scene: Scene, index: dict[str, dict[str, list[int]]], where: Path | str) -> None:
    """Give `scene` the input lists the authors' index file has for it (keyed by scene name: the DL3DV
    hash), so `scene_sample` uses their inputs; a scene the file does not list is an error."""
    if scene.scene_id not in index:
        raise SceneError(f"scene {scene.scene_id} is not in the input index {where}; evaluate it without "
                         "--input-index (KMeans inputs) or use the index file that lists it")
    scene.extras["eval_inputs"] = to_scene_order(index[scene.scene_id], scene.extras.get("file_index"))


def predict(loaded: LoadedModel, sample: Sample, preprocessing: Preprocessing, device: torch.device,
            timer: StageTimer) -> tuple[Gaussians, int]:
    """One forward pass on the sample's inputs, then pruning: (kept Gaussians [N], predicted count).
    The network runs at the precision it was set to (model.precision.Precision.apply)."""
    images = sample.input_images.to(device)[None]  # [1, V, H, W, 3]
    cameras = sample.input_cameras.to(device).reshape(1, sample.input_images.shape[0])
    with timer.stage("predict"), torch.inference_mode():
        predicted = loaded.model(images, cameras).gaussians.scene(0)
    # A sum is finite exactly when every value is (no overflow at these magnitudes), and needs no mask.
    broken = [f.name for f in fields(predicted) if not math.isfinite(float(getattr(predicted, f.name).sum()))]
    if broken:
        raise RuntimeError(f"the network predicted NaN or infinite Gaussian {', '.join(broken)} for "
                           f"{sample.scene_id}; its weights or the scene's cameras are broken")
    p = preprocessing
    with timer.stage("prune"):
        kept = predicted.prune(p.min_opacity, p.keep_ratio, p.random_ratio, p.prune_seed)
    if not kept.count:
        raise ValueError(f"pruning kept none of the {predicted.count} Gaussians: the most opaque has opacity "
                         f"{float(predicted.opacities.max()):.3g}, at or below --min-opacity {p.min_opacity}; "
                         "lower it")
    return kept, predicted.count


def reconstruct(scene: Scene, loaded: LoadedModel, options: Options, out_dir: Path, device: torch.device) -> Result:
    timer = StageTimer(device)
    used = preprocessing(loaded, options)
    precision = resolve_precision(options.precision, device)
    precision.apply(loaded.model)
    check_sample_memory(scene, loaded, options, device)
    with timer.stage("load views"):
        selection, sample = scene_sample(scene, loaded, options)
    inputs, targets = selection.inputs, selection.targets
    height, width = sample.input_images.shape[1:3]
    log.info("%d input views, %d held-out views at %dx%d", len(inputs), len(targets), width, height)

    gaussians, predicted = predict(loaded, sample, used, device, timer)
    result = Result(out_dir, len(inputs), len(targets), (height, width), precision.name, predicted, gaussians.count,
                    timer.seconds)

    renders = out_dir / "renders"
    if targets:
        renders.mkdir(exist_ok=True)
        targets_gt = sample.target_images
        target_cams = sample.target_cameras.to(device)
        with timer.stage("render"):
            pred = render_views(gaussians, target_cams, options.backend, "rendering held-out views").cpu()
        with timer.stage("metrics"):
            per_view = image_metrics(pred, targets_gt, options.lpips)
        result.metrics = mean_metrics(per_view)
        names = [Path(scene.names[i]).stem for i in targets]
        for name, p, t in zip(names, pred, targets_gt):
            save_png(p, renders / f"{name}_pred.png")
            save_png(t, renders / f"{name}_gt.png")
    if options.refine_steps > 0:
        from refine import RefineConfig, refine

        config = RefineConfig.preset("short").replace(steps=options.refine_steps, robust=options.robust,
                                                      backend=options.backend)
        with timer.stage("refine"):
            gaussians, _ = refine(gaussians, sample.input_images.to(device), sample.input_cameras.to(device), config)
        if targets:
            with timer.stage("render"):
                refined = render_views(gaussians, target_cams, options.backend, "rendering refined views").cpu()
            refined_per_view = image_metrics(refined, targets_gt, options.lpips)
            result.refined_metrics = mean_metrics(refined_per_view)
            for name, p in zip(names, refined):
                save_png(p, renders / f"{name}_refined.png")
    if options.video:
        with timer.stage("video"):
            order = torch.argsort(sample.input_indices)
            path = smooth_path(sample.input_cameras.c2w[order], options.video_frames).float()
            path_cams = Cameras(sample.input_cameras.intrinsics[:1].expand(len(path), 4), path, width, height)
            frames = render_views(gaussians, path_cams.to(device), options.backend, "rendering video").cpu()
            write_video(list(frames), out_dir / "video.mp4")

    with timer.stage("save"):
        world = denormalize_gaussians(gaussians.to("cpu"), sample.normalization)
        save_ply(world, out_dir / "gaussians.ply")
        write_json(_cameras_json(scene, sample), out_dir / "cameras.json")
        (out_dir / "inputs").mkdir(exist_ok=True)  # what the network saw; the viewer shows them on the cameras
        for f, image in zip(sample.input_indices, sample.input_images):
            save_png(image, out_dir / "inputs" / f"{Path(scene.names[int(f)]).stem}.png")
        metrics = {"scene": scene.scene_id, "num_inputs": len(inputs), "num_targets": len(targets),
                   "width": width, "height": height, "input_frames": selection.source,
                   "precision": precision.name,
                   "preprocessing": used.as_dict(), "gaussians_predicted": result.predicted,
                   "gaussians_kept": result.kept, "seconds": dict(timer.seconds), "mean": result.metrics}
        if targets:
            metrics["per_view"] = [{"frame": scene.names[f], **{k: v[i] for k, v in per_view.items()}}
                                   for i, f in enumerate(targets)]
        if result.refined_metrics:
            metrics["refined_mean"] = result.refined_metrics
            metrics["refined_per_view"] = [{"frame": scene.names[f], **{k: v[i] for k, v in refined_per_view.items()}}
                                           for i, f in enumerate(targets)]
        write_json(metrics, out_dir / "metrics.json")
    return result


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
