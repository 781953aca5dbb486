"""How much memory a reconstruction needs, known before anything is allocated.

A request the machine cannot hold (`--resolution 20000x20000`, 64 views of 4K frames) is refused with
what would fit, instead of dying in the allocator after minutes of decoding. The estimate follows
the network config: tokens per view (patch size, the 2x2 merge), the widths each block works at
(Mamba2 projections and scan, the transformer's MLP), the head's channels; then the Gaussians,
renders, metrics and PLY columns after the forward pass. Counts are of bytes alive at the peak of
each phase of `inference/reconstruct.py`, read from the code (the CPU path: the native Mamba2 kernels
and oneDNN) and checked against the tensors PyTorch allocates (tests/test_memory.py). They follow the
network's precision (`Plan.network_dtype`): in bfloat16 (LongLRM.set_precision) the activations inside
the blocks' branches, the token merge and the head's projection take 2 bytes, while the residual
stream, rays, norms, the scan's step sizes and state and the Gaussians stay float32 (4 bytes).
Phases do not stack: freed memory goes back to the system between them (inference/timer.py). Within a
phase the process holds more than its live tensors, because glibc's heap, with freed memory kept for
reuse (model/cpu_allocator.py), fragments: `ALLOCATOR_OVERHEAD` covers that. `python -m
bench.bench_memory` compares the estimate with measured peaks. On CUDA the same count is compared with
the GPU's free memory; the fused kernels hold fewer intermediates than the CPU path it follows, so
there it is an upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from model.config import ModelConfig

FLOAT = 4  # bytes of a float32 value: images, rays, the residual stream, Gaussians
# Resident memory over live tensor bytes in a phase: measured 1.0-1.9 on reconstructions of 0.2-0.9 GB
# of tensors, in fp32 and bf16, with and without LPIPS (bench/bench_memory.py; the peak there includes
# fixed costs such as LPIPS's weights, which WORKSPACE covers); 1.35 in the forward pass of `small`
# at 32 views of 256x256.
ALLOCATOR_OVERHEAD = 1.75
# Working buffers that do not grow with the image: weights reordered by oneDNN (the token merge's
# convolution), attention (SDPA's CPU blocks) and renderer workspaces, LPIPS's weights.
WORKSPACE = 160 * 2**20
# LPIPS-VGG (model/metrics.py) scores LPIPS_CHUNK image pairs per pass; its first, 64-channel stage
# holds about LPIPS_VALUES values per pixel of the chunk (measured op by op).
LPIPS_CHUNK = 8
LPIPS_VALUES = 540
PLY_SH = 3 * 16  # SH values per Gaussian in gaussians.ply: padded to degree 3 (model/ply.py's default)


@dataclass(frozen=True)
class Plan:
    """What a reconstruction will hold: views of height x width fed to the network, decoded from
    frames of frame_height x frame_width."""

    inputs: int
    targets: int
    height: int
    width: int
    frame_height: int
    frame_width: int
    distorted: bool = False  # frames are undistorted on load (a float copy and a sampling grid)
    keep_share: float = 1.0  # share of the predicted Gaussians pruning keeps at most
    lpips: bool = True  # LPIPS-VGG on the targets
    video_frames: int = 0  # frames of the fly-through video; 0: none
    network_dtype: torch.dtype = torch.float32  # the network's precision (LongLRM.set_precision)


def mamba_bytes(config: ModelConfig, width: int, length: int, act: int = FLOAT) -> int:
    """Bytes alive at the peak of a bidirectional Mamba2 block (model/mamba2.py) over `length` tokens,
    with the branch's activations `act` bytes each (2 in bfloat16) and the residual stream float32.

    Throughout the backward direction: the residual and its norm (in the branch's dtype), the input
    projection (read in place by both directions), the forward direction's output. Then the scan's
    inputs (the convolved x/B/C, contiguous, written by the native conv; float32 step sizes) and its
    output. The native scan (model/ssd.py `_native_scan`) allocates nothing else but per-thread
    buffers of a few MB (each head's state, one chunk's operands), left to WORKSPACE like oneDNN's.
    """
    m = config.mamba
    inner = m.expand * width
    heads = inner // m.headdim
    conv = inner + 2 * m.ngroups * m.d_state
    projection = 2 * inner + 2 * m.ngroups * m.d_state + heads
    held = length * (FLOAT * width + act * (width + projection + inner))
    inputs = length * (act * conv + FLOAT * heads)
    return held + inputs + act * inner * length


def transformer_bytes(config: ModelConfig, width: int, act: int = FLOAT) -> int:
    """Bytes per token at a transformer block's peak (its MLP): the float32 residual before and after
    attention, then in the branch's dtype its norm and the hidden layer before and after GELU. (SDPA's CPU
    kernel packs K and V into blocks in bfloat16: at the presets' narrowest widths that workspace
    can outgrow the MLP, still far below the Mamba2 blocks' peak.)"""
    return 2 * FLOAT * width + act * width + 2 * act * config.mlp_ratio * width


def network_stages(config: ModelConfig, views: int, height: int, width: int,
                   dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Bytes alive at the peak of each stage of one forward pass (model/longlrm.py) of a network set
    to `dtype` (LongLRM.set_precision), besides the input images and the rays: tokenizer, merge, each
    block ("block 3: m"), head. In bfloat16 the branches' activations take 2 bytes; the residual
    stream, rays, norms' outputs, step sizes and the Gaussians stay float32."""
    act = torch.empty((), dtype=dtype).element_size()
    cast = act if act != FLOAT else 0  # a copy converted to or from the branch's dtype (none in float32)
    pixels = views * height * width
    tokens = pixels // config.patch_size**2 + config.num_global_tokens
    merged = pixels // config.output_patch_size**2 + config.num_global_tokens
    channels = config.gaussians.channels
    # The tokenizer (model/tokenizer.py): the largest of the 9 features per pixel (while 3 float32
    # values per pixel are computed for them), the features, their patches and the tokens, or the
    # features, the tokens, their float32 concatenation with the global tokens and its norm.
    stages = {"tokenizer": max((3 * FLOAT + 9 * act) * pixels, act * (18 * pixels + tokens * config.dim),
                               act * (9 * pixels + tokens * config.dim) + 2 * FLOAT * tokens * config.dim)}
    for i, (kind, block_width) in enumerate(zip(config.blocks, config.widths)):
        if i == config.merge_before:  # the residual, its copy in the branch's dtype, merged, concatenated
            stages["merge"] = (FLOAT + cast) * tokens * config.dim + (2 * act + cast) * merged * config.merged_dim
        length = merged if config.merge_before is not None and i >= config.merge_before else tokens
        stages[f"block {i}: {kind}"] = (mamba_bytes(config, block_width, length, act) if kind == "m"
                                        else transformer_bytes(config, block_width, act) * length)
    # The head (model/gaussian_head.py) under the float32 tokens: its float32 outputs, preallocated, and
    # per chunk of views the tokens' norm and their projection (raw channels), which one native pass
    # activates into the outputs; the previous chunk's projection is held while the next is made.
    head_tokens = FLOAT * (merged - config.num_global_tokens) * config.widths[-1]
    outputs = FLOAT * (channels + 1)
    view, chunk = height * width, min(config.gaussians.views_per_chunk, views)
    following = min(chunk, views - chunk)
    normed = act * config.widths[-1] // config.output_patch_size**2  # per pixel
    stages["head"] = head_tokens + pixels * outputs + view * (chunk * (act * channels + normed)
                                                              + following * act * channels)
    return stages


def network_bytes(config: ModelConfig, views: int, height: int, width: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes alive at the peak of one forward pass, input images excluded: the float32 ray directions
    kept for the head and the largest stage (`network_stages`)."""
    return FLOAT * 3 * views * height * width + max(network_stages(config, views, height, width, dtype).values())


def phase_bytes(config: ModelConfig, plan: Plan) -> dict[str, int]:
    """Bytes alive at the peak of each phase of `inference/reconstruct.py`; the sample's images
    (inputs and targets, float32) are held throughout and counted in every phase."""
    frames = plan.inputs + plan.targets
    view = plan.height * plan.width
    source = frames * plan.frame_height * plan.frame_width
    sample = 3 * frames * view
    decode = 1.5 * source + 0.75 * frames * view  # uint8 frames decoded and stacked, resized in uint8
    if plan.distorted:
        decode += 3 * source + 2 * frames * view  # float frames, sampling grid
    pixels = plan.inputs * view
    channels = config.gaussians.channels
    kept = math.ceil(plan.keep_share * pixels)
    rendering = 2 * channels * kept + 24 * kept  # a stacked copy, activated fields, projections, tiles
    renders = 3 * plan.targets * view
    values = {  # float32 values
        "decode": decode,
        "prune": (channels + 2) * pixels + channels * kept + 5 * pixels,  # predicted, kept, sort order
        "render": rendering + renders,
        "metrics": channels * kept + 2 * renders + max(
            20 * renders,  # SSIM's five filtered moments of every target at once
            LPIPS_VALUES * min(plan.targets, LPIPS_CHUNK) * view if plan.lpips else 0),
        "video": rendering + 3 * plan.video_frames * view if plan.video_frames else 0,
        # kept, their world-frame copy (data/normalize.py), then the PLY's SH padded to degree 3, its
        # columns and records (model/ply.py; 14 non-SH values each)
        "save": kept * (2 * channels + PLY_SH + 2 * (PLY_SH + 14)),
    }
    phases = {name: int(FLOAT * (sample + count)) for name, count in values.items()}
    phases["network"] = FLOAT * sample + network_bytes(config, plan.inputs, plan.height, plan.width, plan.network_dtype)
    return phases


def reconstruction_bytes(config: ModelConfig, plan: Plan) -> int:
    """Peak resident memory a reconstruction adds to the process: its largest phase, times the
    allocator's overhead, plus working buffers of fixed size. Per-scene refinement (optimizer state,
    gradients) is not counted."""
    return int(ALLOCATOR_OVERHEAD * max(phase_bytes(config, plan).values())) + WORKSPACE


def available_bytes(device: torch.device) -> int:
    """Memory free for this process now: the GPU's free memory for CUDA, else what the system (and
    a cgroup limit, as in containers) still has."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    free = psutil.virtual_memory().available
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return free


def check_memory(config: ModelConfig, plan: Plan, available: int, multiple: int = 16) -> None:
    """Refuse a plan whose estimate exceeds `available` bytes, naming what would fit: a size (sides
    multiples of `multiple`, the plan's aspect), a view count, or skipping LPIPS."""
    need = reconstruction_bytes(config, plan)
    if need <= available:
        return

    def fits(inputs: int, height: int, width: int, lpips: bool = plan.lpips) -> bool:
        smaller = replace(plan, inputs=inputs, height=height, width=width, lpips=lpips)
        return reconstruction_bytes(config, smaller) <= available

    def scaled(k: int) -> tuple[int, int]:
        """(H, W) with the short side k multiples, the plan's aspect, multiples of `multiple`."""
        short, aspect = k * multiple, max(plan.height, plan.width) / min(plan.height, plan.width)
        long = max(multiple, round(short * aspect / multiple) * multiple)
        return (short, long) if plan.height <= plan.width else (long, short)

    def largest(lpips: bool) -> tuple[int, int] | None:
        """The largest size at the plan's aspect that fits (None: not even the smallest)."""
        low, high = 0, min(plan.height, plan.width) // multiple  # k known to fit (0: none), k that does not
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if fits(plan.inputs, *scaled(middle), lpips) else (low, middle)
        return scaled(low) if low else None

    hints = []
    size = largest(plan.lpips)
    if size is not None:
        unscored = largest(False) if plan.lpips else None
        more = f" ({unscored[1]}x{unscored[0]} with --no-lpips)" if unscored and unscored != size else ""
        hints.append(f"--resolution {size[1]}x{size[0]}{more}")
    views = next((v for v in range(plan.inputs - 1, 1, -1) if fits(v, plan.height, plan.width)), None)
    if views is not None:
        hints.append(f"--num-views {views}")
    if plan.lpips and fits(plan.inputs, plan.height, plan.width, lpips=False):
        hints.append("--no-lpips")  # LPIPS-VGG on full-size targets can outweigh the network
    advice = " or ".join(hints) + " would fit" if hints else "free memory or use a machine with more"
    raise ValueError(f"{plan.inputs} input views at {plan.width}x{plan.height} need about {_gb(need)} of memory, "
                     f"{_gb(available)} are available; {advice}")


def _gb(count: int) -> str:
    return f"{count / 2**30:.1f} GB" if count < 2**40 else f"{count / 2**40:.1f} TB"
