"""How much memory a reconstruction needs, known before anything is allocated.

A request the machine cannot hold (`--resolution 20000x20000`, 64 views of 4K frames) is refused with
what would fit, instead of dying in the allocator after minutes of decoding. The estimate follows
the network config: tokens per view (patch size, the 2x2 merge), the widths each block works at
(Mamba2 projections and scan, the transformer's MLP), the head's channels; then the Gaussians,
renders, metrics and PLY columns after the forward pass. Counts are of float32 values alive at the
peak of each phase of `inference/reconstruct.py`, read from the code and checked against the tensors
PyTorch allocates (tests/test_memory.py). Phases do not stack: freed memory goes back to the system
between them (inference/timer.py). Within a phase the process holds more than its live tensors,
because glibc's heap, with freed memory kept for reuse (model/cpu_allocator.py), fragments:
`ALLOCATOR_OVERHEAD` covers that. `python -m bench.bench_memory` compares the estimate with measured
peaks. On CUDA the same count is compared with the GPU's free memory; the fused kernels hold fewer
intermediates than the PyTorch path it follows, so there it is an upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from model.config import ModelConfig
from model.ssd import _SLAB_ELEMENTS

FLOAT = 4  # bytes; the network, Gaussians and images are float32 on the CPU path
# Resident memory over live tensor bytes in a phase: measured 1.3-1.8 on reconstructions of 0.26-0.9 GB
# of tensors (bench/bench_memory.py; the peak there includes fixed costs such as LPIPS's weights, which
# WORKSPACE covers); the 13.8 GB peak of the `paper` forward pass at 32 views of 960x544 (README,
# bench/bench_model.py) is 1.65 times its count here, with the interpreter and the weights.
ALLOCATOR_OVERHEAD = 1.75
# Working buffers that do not grow with the image: the SSD scan's slabs (model/ssd.py bounds each
# intermediate to a few million values), attention and renderer workspaces.
WORKSPACE = 160 * 2**20
# LPIPS-VGG (model/metrics.py) scores LPIPS_CHUNK image pairs per pass; its first, 64-channel stage
# holds about LPIPS_VALUES values per pixel of the chunk (measured op by op).
LPIPS_CHUNK = 8
LPIPS_VALUES = 540


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


def mamba_values(config: ModelConfig, width: int, length: int) -> int:
    """Values alive at the peak of a bidirectional Mamba2 block (model/mamba2.py) over `length` tokens.

    Throughout the backward direction: the residual and its norm, the input projection and its flipped
    copy, the forward direction's output. Then the larger of the causal convolution (padded input,
    partial sums, bias and SiLU outputs) and the scan: the convolved x/B/C, the outputs gathered and
    gated, and one slab of chunks at a time (model/ssd.py): the q x q decays and scores per head, the
    chunk-local products and the states entering each chunk.
    """
    m = config.mamba
    inner = m.expand * width
    heads = inner // m.headdim
    conv = inner + 2 * m.ngroups * m.d_state
    projection = 2 * inner + 2 * m.ngroups * m.d_state + heads
    q = min(m.cpu_chunk_size, length)
    slab = min(length, max(1, _SLAB_ELEMENTS // (heads * m.headdim * max(m.d_state, q))) * q)
    slab_values = 2 * heads * q + 5 * inner + 2 * m.d_state * inner // q
    scan = length * (conv + heads + 2 * inner) + slab * slab_values
    held = length * (2 * width + 2 * projection + inner)
    return held + max(4 * conv * length, scan, length * (conv + 4 * inner))


def transformer_values(config: ModelConfig, width: int) -> int:
    """Values per token at a transformer block's peak (its MLP): residual, norm, the hidden layer
    before and after GELU, and the output."""
    return (3 + 2 * config.mlp_ratio) * width


def network_values(config: ModelConfig, views: int, height: int, width: int) -> int:
    """Float values alive at the peak of one forward pass (model/longlrm.py), inputs excluded: the
    ray directions kept for the head, and the largest of tokenizer, blocks, merge and head."""
    pixels = views * height * width
    tokens = pixels // config.patch_size**2
    merged = pixels // config.output_patch_size**2
    channels = config.gaussians.channels
    outputs = (channels + 2) * pixels  # Gaussian fields, distance and depth
    stages = [18 * pixels + 2 * tokens * config.dim]  # per-pixel features, their patches, tokens
    if config.merge_before is not None:
        stages.append(tokens * config.dim + 2 * merged * config.merged_dim)
    for kind, block_width in zip(config.blocks, config.widths):
        length = merged if block_width == config.merged_dim and config.merge_before is not None else tokens
        stages.append(mamba_values(config, block_width, length) if kind == "m"
                      else transformer_values(config, block_width) * length)
    head_tokens = merged * config.widths[-1]
    chunk = config.gaussians.views_per_chunk
    if views <= chunk:  # one piece, then concatenated into the outputs (model/gaussian_head.py)
        stages.append(head_tokens + 2 * outputs + 15 * pixels)
    else:  # outputs preallocated; a chunk's projection, its reshaped copy and the previous chunk's
        stages.append(head_tokens + outputs + (3 * channels + 18) * chunk * height * width)
    return 3 * pixels + max(stages)


def phase_values(config: ModelConfig, plan: Plan) -> dict[str, int]:
    """Float values alive at the peak of each phase of `inference/reconstruct.py`; the sample's
    images (inputs and targets, float) are held throughout and counted in every phase."""
    frames = plan.inputs + plan.targets
    view = plan.height * plan.width
    source = frames * plan.frame_height * plan.frame_width
    sample = 3 * frames * view
    decode = 1.5 * source + 0.75 * frames * view  # uint8 frames decoded and stacked, resized in uint8
    if plan.distorted:
        decode += 3 * source + 2 * frames * view  # float frames, sampling grid
    pixels = plan.inputs * view
    channels = config.gaussians.channels
    sh = 3 * (config.gaussians.sh_degree + 1) ** 2
    kept = math.ceil(plan.keep_share * pixels)
    rendering = 2 * channels * kept + 24 * kept  # a stacked copy, activated fields, projections, tiles
    renders = 3 * plan.targets * view
    phases = {
        "decode": decode,
        "network": network_values(config, plan.inputs, plan.height, plan.width),
        "prune": (channels + 2) * pixels + channels * kept + 5 * pixels,  # predicted, kept, sort order
        "render": rendering + renders,
        "metrics": channels * kept + 2 * renders + max(
            20 * renders,  # SSIM's five filtered moments of every target at once
            LPIPS_VALUES * min(plan.targets, LPIPS_CHUNK) * view if plan.lpips else 0),
        "video": rendering + 3 * plan.video_frames * view if plan.video_frames else 0,
        # kept, their world-frame copy (data/normalize.py), the PLY's SH rest, columns and records (model/ply.py)
        "save": kept * (3 * channels + sh + 14),
    }
    return {name: int(sample + values) for name, values in phases.items()}


def reconstruction_bytes(config: ModelConfig, plan: Plan) -> int:
    """Peak resident memory a reconstruction adds to the process: its largest phase, times the
    allocator's overhead, plus working buffers of fixed size. Per-scene refinement (optimizer state,
    gradients) is not counted."""
    return int(ALLOCATOR_OVERHEAD * FLOAT * max(phase_values(config, plan).values())) + WORKSPACE


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
