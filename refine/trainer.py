"""The per-scene optimisation loop: one random training view per step, L = (1-λ) L1 + λ (1 - SSIM).

Works on any device the renderer supports: gsplat on CUDA, the project's C++ kernel on CPU
(backend "auto" picks and logs). Order within a step follows gsplat's strategies: backward, Adam step,
then density control; surgery replaces parameters (without gradients), so doing it after the step
means no Gaussian misses the update of the step whose gradients chose it for cloning or splitting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from model.cameras import Cameras
from model.gaussians import Gaussians
from model.metrics import psnr, ssim
from model.render import rasterize

from .config import RefineConfig
from .densify import GradStats, densify_and_prune, reset_opacity
from .params import GaussianParams, build_optimizer, group, position_schedule, scene_scale
from .robust import ErrorHistogram, Utilization, inlier_mask, sampled_mask, warmup_alpha
from .schedule import DensitySchedule
from .surgery import keep


@dataclass
class RefineHistory:
    loss: list[float] = field(default_factory=list)  # [steps] training loss per step
    count: list[int] = field(default_factory=list)  # [steps] Gaussians after each step
    seconds: list[float] = field(default_factory=list)  # [steps] optimisation time so far (evaluation excluded)
    evals: list[dict] = field(default_factory=list)  # {"step", "seconds", "count", "psnr", "ssim"} on held-out views
    events: list[dict] = field(default_factory=list)  # density-control events with their counts
    spatial_lr_scale: float = 0.0


def render(gaussians: Gaussians, cameras: Cameras, sh_degree: int, background: Tensor, backend: str):
    """Render [C] cameras: (colors [C, H, W, 3], alphas [C, H, W, 1], meta)."""
    return rasterize(
        gaussians.means, gaussians.rotations, gaussians.scales, gaussians.opacities, gaussians.sh,
        cameras.viewmats, cameras.Ks, cameras.width, cameras.height,
        sh_degree=sh_degree, backgrounds=background.expand(len(cameras.c2w), 3), backend=backend,
    )


def photometric_loss(pred: Tensor, target: Tensor, lambda_dssim: float, weights: Tensor | None = None) -> Tensor:
    """(1-λ) L1 + λ (1 - SSIM) for one image [H, W, 3]; weights [H, W] (0/1) drop pixels from the L1 term.

    As in SpotlessSplats the SSIM term stays unmasked: it is the only signal left in masked regions,
    which lets a region wrongly flagged as outlier (a large but fixable model error) still improve.
    """
    diff = (pred - target).abs()  # [H, W, 3]
    l1 = diff.mean() if weights is None else (weights[..., None] * diff).mean()
    return (1 - lambda_dssim) * l1 + lambda_dssim * (1 - ssim(pred, target))


@torch.no_grad()
def evaluate(gaussians: Gaussians, images: Tensor, cameras: Cameras, sh_degree: int, background: Tensor,
             backend: str) -> dict[str, float]:
    """Mean PSNR / SSIM over views (images [V, H, W, 3], cameras [V]), one view at a time."""
    scores = {"psnr": [], "ssim": []}
    for v in range(len(images)):
        colors, _, _ = render(gaussians, cameras[v : v + 1], sh_degree, background, backend)
        scores["psnr"].append(float(psnr(colors[0], images[v])))
        scores["ssim"].append(float(ssim(colors[0], images[v])))
    return {k: sum(vals) / len(vals) for k, vals in scores.items()}


def _emptied(event: dict, config: RefineConfig) -> str:
    """What to tell the user when the density-control `event` pruned the last Gaussians: why, and
    which settings keep them (as `python -m refine --set` takes them)."""
    where = f"at step {event['step']} of {config.steps}"
    if event["kind"] == "ubp":
        return (f"robust pruning removed all {event['before']:,} remaining Gaussians {where}: no training view used "
                f"them enough (ubp_threshold={config.ubp_threshold:g}) or their opacity was below "
                f"min_opacity={config.min_opacity:g}, so nothing is left to render; lower ubp_threshold or "
                "min_opacity, or refine without --robust")
    return (f"density control pruned all {event['before'] + event['cloned'] + event['split']:,} Gaussians {where}: "
            f"each had an opacity below min_opacity={config.min_opacity:g}"
            + (f" or looked larger than max_screen_size={config.max_screen_size:g} pixels or a tenth of the scene"
               if event["step"] > config.opacity_reset_interval else "")
            + ", so nothing is left to render; lower min_opacity (e.g. --set min_opacity=0.001), start from "
            "Gaussians that fit the views better, or turn density control off with --set densify=false")


def refine(gaussians: Gaussians, images: Tensor, cameras: Cameras, config: RefineConfig | None = None,
           holdout=None, progress: bool = True) -> tuple[Gaussians, RefineHistory]:
    """Optimise one scene's Gaussians (means [N, 3]) against posed images [V, H, W, 3] with cameras [V].

    holdout: indices of views kept out of training and evaluated before, every `eval_every` steps, and
    after. Returns the refined Gaussians (detached, on the images' device) and the run's history.
    """
    config = config or RefineConfig.preset("short")
    if gaussians.count == 0:
        raise ValueError("there are no Gaussians to refine")
    device = images.device
    cameras = cameras.to(device)
    held = sorted({int(i) for i in holdout}) if holdout is not None else []
    train = [i for i in range(len(images)) if i not in set(held)]
    if not train:
        raise ValueError("no training views left after the holdout")
    width, height = cameras.width, cameras.height

    params = GaussianParams(gaussians).to(device)
    extent = scene_scale(cameras[train], params.xyz)  # for size thresholds, and by default learning rates
    lr_scale = config.spatial_lr_scale or extent
    optimizer = build_optimizer(params, config, lr_scale)
    schedule = position_schedule(config, lr_scale)
    background = torch.tensor(config.background, dtype=torch.float32, device=device)
    density = DensitySchedule(config, white_background=bool((background == 1).all()))
    max_degree = gaussians.sh_degree
    degree = min(config.sh_degree_start, max_degree)
    noise = torch.Generator(device=device).manual_seed(config.seed)
    views = torch.Generator().manual_seed(config.seed)
    history = RefineHistory(spatial_lr_scale=lr_scale)

    grad_stats = GradStats(params.count, device)
    utilization = Utilization(params.count, device)
    errors = ErrorHistogram(config.robust_percentile, config.robust_bin_width, config.robust_hist_decay)

    def record_eval(step: int, seconds: float) -> None:
        if held:
            scores = evaluate(params.gaussians(), images[held], cameras[held], degree, background, config.backend)
            history.evals.append({"step": step, "seconds": seconds, "count": params.count, **scores})

    record_eval(0, 0.0)
    order: list[int] = []
    elapsed = 0.0
    bar = tqdm(total=config.steps, disable=not progress, desc="refine", dynamic_ncols=True)
    ema = None
    for step in range(1, config.steps + 1):  # 1-based like graphdeco, so its schedules carry over unchanged
        tic = time.perf_counter()
        group(optimizer, "xyz")["lr"] = schedule(step)
        if step % config.sh_degree_interval == 0:
            degree = min(degree + 1, max_degree)
        if not order:  # every training view once per epoch, in random order
            order = [train[i] for i in torch.randperm(len(train), generator=views).tolist()]
        v = order.pop()

        colors, _, meta = render(params.gaussians(), cameras[v : v + 1], degree, background, config.backend)
        pred, target = colors[0], images[v]  # [H, W, 3]
        weights = None
        if config.robust:
            error = (pred.detach() - target).abs().mean(-1)  # [H, W]
            mask = inlier_mask(error, errors.threshold)
            weights = sampled_mask(mask, warmup_alpha(step - 1, config.robust_schedule_beta), noise)
            errors.update(error)
        loss = photometric_loss(pred, target, config.lambda_dssim, weights)
        loss.backward()

        with torch.no_grad():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            grad2d, radii = meta["means2d"].grad, meta["radii"]
            if density.accumulates(step):
                grad_stats.add(grad2d, radii, width, height)
            if density.tracks_utilization(step):
                utilization.add(grad2d, radii, width, height)
            changed = False
            if density.prunes_unused(step):
                # UBP stands in for the opacity reset: drop what no recent view used, and the transparent
                unused = utilization.unused(config.ubp_threshold) | (torch.sigmoid(params.opacity) < config.min_opacity)
                before = params.count
                keep(params, optimizer, ~unused)
                grad_stats.keep(~unused)
                history.events.append({"step": step, "kind": "ubp", "pruned": int(unused.sum()), "before": before,
                                       "after": params.count})
                changed = True
            if density.densifies(step):
                event = densify_and_prune(params, optimizer, grad_stats, config, extent, step, noise)
                history.events.append({"step": step, "kind": "densify", **event})
                changed = True
            if density.resets_opacity(step):
                reset_opacity(params, optimizer)
                history.events.append({"step": step, "kind": "opacity_reset"})
            if changed:
                grad_stats = GradStats(params.count, device)
                utilization = Utilization(params.count, device)

        if params.count == 0:
            raise RuntimeError(_emptied(history.events[-1], config))
        elapsed += time.perf_counter() - tic
        history.loss.append(loss.item())
        history.count.append(params.count)
        history.seconds.append(elapsed)
        ema = history.loss[-1] if ema is None else 0.6 * ema + 0.4 * history.loss[-1]
        if step % 10 == 0 or step == config.steps:
            bar.set_postfix(loss=f"{ema:.4f}", gaussians=params.count, refresh=False)
            bar.update(step - bar.n)
        if held and config.eval_every and step % config.eval_every == 0 and step != config.steps:
            record_eval(step, elapsed)
    bar.close()
    record_eval(config.steps, elapsed)
    return params.gaussians().detach(), history
