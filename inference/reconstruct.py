"""One scene in, everything out: views -> Gaussians -> pruned PLY, held-out renders, metrics, video.

    from inference import Options, reconstruct
    from model import load_model
    result = reconstruct(scene, load_model(path), Options(num_views=32, holdout=True))
    result.gaussians, result.metrics        # world-frame Gaussians [N] and held-out PSNR/SSIM/LPIPS

The network sees poses normalised on its input cameras; renders and refinement happen in that
frame, and the Gaussians are mapped back to the scene's own world frame at the end. Files (the PLY,
renders, cameras.json, metrics.json, the video) are written only when an output folder is given.
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
from data.config import DataConfig, ResolutionConfig, ViewConfig
from data.errors import SceneError
from data.images import ImageSize
from data.normalize import denormalize_gaussians
from data.pipeline import capture_sample
from data.resize import ASPECT_TOLERANCE, aspect_change, inference_size
from data.scene import Scene
from data.view_sampling import Selection, eval_targets, to_scene_order
from model.cameras import Cameras
from model.gaussians import Gaussians
from model.ply import save_ply
from model.precision import Precision, resolve_precision

from .camera_path import smooth_path
from model.pretrained import LoadedModel, Preprocessing
from .evaluation import ViewScores, mean_metrics
from .memory import Plan, available_bytes, check_memory
from .outputs import save_png, write_json, write_video
from .timer import StageTimer

log = logging.getLogger("inference")

HOLDOUT_EVERY = 8  # the DL3DV-140 protocol's held-out fold
RESOLUTION_MULTIPLE = 16  # --resolution sides: the paper network's patch (8) times its token merge (2)
# A checkpoint predicts Gaussians of the size (in pixels) it was trained at: beyond this ratio of
# short sides, renders blur (or leave gaps) and refinement slows down with the larger footprints.
RESOLUTION_TOLERANCE = 1.5


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
    ply_sh_degree: int | None = 3  # PLY SH degree (higher bands zero); None: the Gaussians' own
    video: bool = False
    video_frames: int = 120
    lpips: bool = True
    backend: str = "auto"  # renderer backend
    precision: str = "auto"  # the network's: auto | fp32 | bf16 (model/precision.py)


@dataclass
class Result:
    gaussians: Gaussians  # [N] in the scene's own world frame, on the CPU, at the network's SH degree (refined
    # when refinement ran)
    num_inputs: int
    num_targets: int
    input_frames: str  # how the inputs were chosen (data.view_sampling.Selection.source)
    size: ImageSize  # of the views the network saw
    precision: str  # the network's, as resolved for the device: "fp32" or "bf16"
    predicted: int
    kept: int
    seconds: dict[str, float]
    metrics: dict[str, float | None] = field(default_factory=dict)  # held-out means, when views were held out
    refined: int | None = None  # Gaussians after refinement
    refined_metrics: dict[str, float | None] = field(default_factory=dict)
    out_dir: Path | None = None  # where the files went; None: nothing was written


def render_views(gaussians: Gaussians, cameras: Cameras, backend: str, what: str) -> Tensor:
    """One scene's Gaussians [N] into cameras [T] -> images [T, H, W, 3], with a progress bar."""
    return torch.cat([gaussians.render(cameras[t:t + 1], backend=backend)
                      for t in tqdm(range(cameras.shape[0]), desc=what, unit="view", leave=False)])


def score_views(gaussians: Gaussians, cameras: Cameras, targets: Tensor, files: list[Path] | None, with_lpips: bool,
                backend: str, timer: StageTimer, what: str) -> dict[str, list[float | None]]:
    """Render, score and save each held-out view in turn (cameras [T], targets [T, H, W, 3] on the CPU,
    files [T] PNG paths for the renders, None: not saved): per-view metrics of the 8-bit renders."""
    scores = ViewScores(with_lpips)
    for t in tqdm(range(len(targets)), desc=what, unit="view", leave=False):
        with timer.stage("render"):
            pred = gaussians.render(cameras[t:t + 1], backend=backend)[0].cpu()
        with timer.stage("metrics"):
            scores.add(pred, targets[t])
        if files is not None:
            with timer.stage("save"):
                save_png(pred, files[t])
    return scores.per_view


def parse_resolution(text: str) -> int | ImageSize:
    """`540` (a short side: whole frames keep their aspect) or `960x544` (width x height) -> the short
    side, or the size; multiples of 16."""
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
    return ImageSize(height=height, width=width) if "x" in text.lower() else height


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


def check_sample_memory(scene: Scene, loaded: LoadedModel, options: Options, device: torch.device,
                        precision: Precision) -> None:
    """Refuse, before a frame is decoded, a reconstruction of `scene` that the memory available on
    `device` cannot hold, naming one that fits (inference/memory.py)."""
    config = loaded.model.config
    plan = replace(sample_plan(scene, loaded, options), network_dtype=precision.dtype)
    check_memory(config, plan, available_bytes(device), math.lcm(RESOLUTION_MULTIPLE, config.output_patch_size))


def sample_plan(scene: Scene, loaded: LoadedModel, options: Options) -> Plan:
    """The views and size `scene_sample` will make, known before a frame is decoded; the input count
    is an upper bound (a scene's stored list may hold fewer)."""
    config, size = _sample_config(scene, loaded, options)
    height, width = size or inference_size(scene.height, scene.width, config.resolution)[0]
    targets = len(eval_targets(len(scene), HOLDOUT_EVERY if options.holdout else None))
    return Plan(min(options.num_views, len(scene) - targets), targets, height, width, scene.height, scene.width,
                scene.distortion is not None, preprocessing(loaded, options).keep_ratio or 1.0, options.lpips,
                options.video_frames if options.video else 0)


def _sample_config(scene: Scene, loaded: LoadedModel, options: Options) -> tuple[DataConfig, ImageSize | None]:
    """The sample recipe for `scene` and the size --resolution asks for (None: the recipe's size)."""
    p = preprocessing(loaded, options)
    return sample_recipe(replace(loaded.resolution, resample=p.resample), p.scene_scale, options.num_views,
                         options.resolution)


def sample_recipe(resolution: ResolutionConfig, scene_scale: float, num_views: int,
                  requested: str | None) -> tuple[DataConfig, ImageSize | None]:
    """The inference sample recipe: `num_views` inputs, every 8th frame held out when asked, the
    resolution rule `resolution` unless `requested` (--resolution) names a short side or a size.
    Returns the recipe and the size to use (None: the rule's size for each scene)."""
    size = None
    if requested:
        parsed = parse_resolution(requested)
        if isinstance(parsed, ImageSize):
            size = parsed
        else:
            resolution = replace(resolution, mode="full", size=parsed)
    config = DataConfig(views=ViewConfig(num_inputs=num_views, num_targets=0, eval_every=HOLDOUT_EVERY),
                        resolution=resolution, scene_scale=scene_scale)
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


def reconstruct(scene: Scene, loaded: LoadedModel, options: Options, out_dir: Path | None = None,
                device: torch.device | str | None = None, timer: StageTimer | None = None) -> Result:
    """Predict (and refine, when asked) `scene`'s Gaussians: returned in its own world frame, with
    metrics on the held-out views when `options.holdout`. Files are written only into `out_dir` (an
    existing folder): gaussians.ply, cameras.json, metrics.json, inputs/, renders/ and the video.

    device: where the network runs and renders (None: where its weights are). timer: the run's
    timer, started by the caller (so its setup counts); None starts one here.
    """
    if options.video and out_dir is None:
        raise ValueError("the video is written to a file: give an output folder, or leave Options.video off")
    device = next(loaded.model.parameters()).device if device is None else torch.device(device)
    timer = timer or StageTimer(device)
    used = preprocessing(loaded, options)
    precision = resolve_precision(options.precision, device)
    precision.apply(loaded.model)
    check_sample_memory(scene, loaded, options, device, precision)
    with timer.stage("load views"):
        selection, sample = scene_sample(scene, loaded, options)
    inputs, targets = selection.inputs, selection.targets
    size = ImageSize(*sample.input_images.shape[1:3])
    log.info("%d input views, %d held-out views at %dx%d", len(inputs), len(targets), size.width, size.height)
    mismatch = resolution_mismatch(loaded, size.height, size.width)
    if mismatch:
        log.warning("warning: %s", mismatch)

    gaussians, predicted = predict(loaded, sample, used, device, timer)
    kept = gaussians.count
    renders = None if out_dir is None else out_dir / "renders"
    names = [Path(scene.names[i]).stem for i in targets]

    def render_files(kind: str) -> list[Path] | None:
        return None if renders is None else [renders / f"{name}_{kind}.png" for name in names]

    target_cams = sample.target_cameras.to(device)
    per_view, refined_per_view, refined = {}, {}, None
    if targets:
        if renders is not None:
            renders.mkdir(exist_ok=True)
            with timer.stage("save"):
                for name, t in zip(names, sample.target_images):
                    save_png(t, renders / f"{name}_gt.png")
        per_view = score_views(gaussians, target_cams, sample.target_images, render_files("pred"), options.lpips,
                               options.backend, timer, "held-out views")
    if options.refine_steps > 0:
        with timer.stage("refine"):
            from refine import RefineConfig, refine

            config = RefineConfig.preset("short", steps=options.refine_steps, robust=options.robust,
                                         backend=options.backend)
            gaussians, _ = refine(gaussians, sample.input_images.to(device), sample.input_cameras.to(device), config)
        refined = gaussians.count
        if refined != kept:
            log.info("refinement changed the Gaussians from %d to %d", kept, refined)
        if targets:
            refined_per_view = score_views(gaussians, target_cams, sample.target_images, render_files("refined"),
                                           options.lpips, options.backend, timer, "held-out views, refined")
    if options.video:
        with timer.stage("video"):
            order = torch.argsort(sample.input_indices)
            path = smooth_path(sample.input_cameras.c2w[order], options.video_frames).float()
            intrinsics = sample.input_cameras.intrinsics[:1].expand(len(path), 4)
            path_cams = Cameras(intrinsics, path, size.width, size.height)
            frames = render_views(gaussians, path_cams.to(device), options.backend, "rendering video").cpu()
            write_video(list(frames), out_dir / "video.mp4")

    with timer.stage("world frame" if out_dir is None else "save"):
        world = denormalize_gaussians(gaussians.to("cpu"), sample.normalization)
        result = Result(world, len(inputs), len(targets), selection.source, size, precision.name, predicted, kept,
                        timer.seconds, mean_metrics(per_view), refined, mean_metrics(refined_per_view), out_dir)
        if out_dir is None:
            return result
        save_ply(world, out_dir / "gaussians.ply", sh_degree=options.ply_sh_degree)
        write_json(cameras_json(scene, sample), out_dir / "cameras.json")
        (out_dir / "inputs").mkdir(exist_ok=True)  # what the network saw; the viewer shows them on the cameras
        for f, image in zip(sample.input_indices, sample.input_images):
            save_png(image, out_dir / "inputs" / f"{Path(scene.names[int(f)]).stem}.png")
        metrics = {"scene": scene.scene_id, "num_inputs": len(inputs), "num_targets": len(targets),
                   "width": size.width, "height": size.height, "input_frames": selection.source,
                   "precision": precision.name,
                   "preprocessing": used.as_dict(), "gaussians_predicted": predicted,
                   "gaussians_kept": kept, "seconds": {**timer.seconds, "total": timer.elapsed()},
                   "mean": result.metrics}
        if mismatch:
            metrics["warnings"] = [mismatch]
        if targets:
            metrics["per_view"] = [{"frame": scene.names[f], **{k: v[i] for k, v in per_view.items()}}
                                   for i, f in enumerate(targets)]
        if options.refine_steps > 0:
            metrics["refine"] = {"steps": options.refine_steps, "robust": options.robust}
            metrics["gaussians_refined"] = refined
        if result.refined_metrics:
            metrics["refined_mean"] = result.refined_metrics
            metrics["refined_per_view"] = [{"frame": scene.names[f], **{k: v[i] for k, v in refined_per_view.items()}}
                                           for i, f in enumerate(targets)]
        write_json(metrics, out_dir / "metrics.json")
    return result


def resolution_mismatch(loaded: LoadedModel, height: int, width: int) -> str | None:
    """A sentence when (height, width) is far from the checkpoint's training resolution, else None."""
    trained = loaded.resolution.size
    ratio = min(height, width) / trained
    if 1 / RESOLUTION_TOLERANCE < ratio < RESOLUTION_TOLERANCE:
        return None
    return (f"inference at {width}x{height} is {ratio:.2g}x the resolution this checkpoint was trained at "
            f"(short side {trained}): it predicts Gaussians sized for that resolution, so expect "
            f"{'blur and slower rendering and refinement' if ratio > 1 else 'gaps and lost detail'}; "
            f"--resolution {RESOLUTION_MULTIPLE * max(1, round(trained / RESOLUTION_MULTIPLE))} matches its training")


def cameras_json(scene: Scene, sample) -> dict:
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
