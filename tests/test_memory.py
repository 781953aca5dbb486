"""The memory estimate checked before a reconstruction: against the tensors PyTorch really holds,
against a process's measured peak, and the sizes it suggests when a request does not fit."""

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from inference.memory import Plan, check_memory, mamba_bytes, network_bytes, network_stages, reconstruction_bytes
from model.build import build_model
from model.cameras import Cameras
from model.config import preset
from model.cpu_features import native_bf16_matmul
from model.mamba2 import Mamba2Block

ROOT = Path(__file__).resolve().parent.parent


def live_peak(run) -> int:
    """Most bytes of tensors alive at once while `run()` runs (the profiler's allocation events), on one
    thread: oneDNN's bf16 matmuls allocate float32 scratch per thread, a fixed workspace the estimate
    leaves to WORKSPACE, not activations it counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    finally:
        torch.set_num_threads(threads)
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    alive = peak = 0
    for event in events:
        alive += event.nbytes()  # negative when freed
        peak = max(peak, alive)
    return peak


def forward_peak(model, views: int, height: int, width: int) -> int:
    """Most bytes of tensors alive at once during a forward pass, the input images included."""
    images = torch.rand(1, views, height, width, 3)
    c2w = torch.eye(4).repeat(1, views, 1, 1)
    c2w[..., 0, 3] = torch.arange(views) * 0.1
    cameras = Cameras(torch.tensor([0.8 * width, 0.8 * width, width / 2, height / 2]).repeat(1, views, 1), c2w,
                      width, height)
    return live_peak(lambda: model(images, cameras)) + images.nbytes


def estimated_forward(config, views: int, height: int, width: int, dtype: torch.dtype = torch.float32) -> int:
    return network_bytes(config, views, height, width, dtype) + 4 * 3 * views * height * width  # + the images


# The count follows oneDNN's bfloat16 matmuls; where bfloat16 is emulated they may hold other buffers.
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not native_bf16_matmul()[0],
                                                             reason="no native bf16 matmuls on this CPU"))
NETWORKS = [("tiny", 4, 32, 64), ("tiny", 12, 64, 64), ("small", 4, 64, 64), ("small", 16, 128, 128)]


@pytest.mark.parametrize("name,views,height,width", NETWORKS)
def test_network_count_matches_the_tensors_alive(name, views, height, width):
    """Per block kind, merge, head chunking and scan slabs: the count follows what is allocated."""
    model = build_model(name).eval()
    measured = forward_peak(model, views, height, width)
    estimated = estimated_forward(model.config, views, height, width)
    assert 0.95 * measured <= estimated <= 1.15 * measured, (estimated, measured)


@pytest.mark.parametrize("name,views,height,width", NETWORKS)
def test_bf16_network_count_matches_the_tensors_alive(name, views, height, width):
    """LongLRM.set_precision(bfloat16): branch activations of 2 bytes, the residual stream and the
    Gaussians float32."""
    model = build_model(name).eval().set_precision(torch.bfloat16)
    measured = forward_peak(model, views, height, width)
    estimated = estimated_forward(model.config, views, height, width, torch.bfloat16)
    assert 0.95 * measured <= estimated <= 1.15 * measured, (estimated, measured)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_network_count_when_a_mamba_block_holds_the_peak(dtype):
    """With few SH coefficients decoded one view at a time, and Mamba2 blocks twice as wide inside,
    the head holds less than a Mamba2 block: the network's peak is then the block's."""
    tiny = preset("tiny")
    config = replace(tiny, gaussians=replace(tiny.gaussians, sh_degree=0, views_per_chunk=1),
                     mamba=replace(tiny.mamba, expand=4))
    stages = network_stages(config, 4, 64, 64, dtype)
    assert max(stages, key=stages.get).endswith(": m"), stages
    model = build_model(config).eval().set_precision(dtype)
    measured = forward_peak(model, 4, 64, 64)
    estimated = estimated_forward(config, 4, 64, 64, dtype)
    assert 0.95 * measured <= estimated <= 1.15 * measured, (estimated, measured)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("name,width,length", [("tiny", 64, 512), ("paper", 256, 1000), ("paper", 256, 4196)])
def test_mamba_block_count_matches_the_tensors_alive(name, width, length, dtype):
    """One block, its linear layers in `dtype` as set_precision leaves them: whole chunks, and a
    shorter final chunk (1000 = 15 x 64 + 40)."""
    config = preset(name)
    block = Mamba2Block(width, config.mamba).eval()
    for module in block.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)
    x = torch.randn(1, length, width)
    measured = live_peak(lambda: block(x)) + x.nbytes
    estimated = mamba_bytes(config, width, length, torch.empty((), dtype=dtype).element_size())
    assert 0.97 * measured <= estimated <= 1.05 * measured, (estimated, measured)


def test_estimate_covers_the_measured_peak_of_a_reconstruction(tmp_path):
    """Views to PLY in a fresh process (bench/bench_memory.py): the resident peak stays below the
    estimate, which is not far above it."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure a process's peak")
    from bench.bench_memory import write_scene

    for case in ("tiny:16:256x128", "small:8:256x256"):
        scene = write_scene(case, tmp_path / case.replace(":", "-"))
        out = subprocess.run([sys.executable, "-m", "bench.bench_memory", "--worker", case, str(scene), "--no-lpips"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert r["measured"] <= r["estimate"] <= 2 * r["measured"], r


def test_refusal_names_the_largest_size_and_view_count_that_fit():
    config = preset("paper")
    plan = Plan(inputs=32, targets=20, height=544, width=960, frame_height=540, frame_width=960, keep_share=0.4,
                lpips=False)
    available = 6 * 2**30
    with pytest.raises(ValueError) as refusal:
        check_memory(config, plan, available, multiple=16)
    message = str(refusal.value)
    assert message.startswith("32 input views at 960x544 need about ") and "--no-lpips" not in message
    width, height = (int(v) for v in re.search(r"--resolution (\d+)x(\d+) or", message).groups())
    views = int(re.search(r"--num-views (\d+) would fit", message).group(1))

    def need(**changes) -> int:
        return reconstruction_bytes(config, replace(plan, **changes))

    assert width % 16 == height % 16 == 0 and abs(width / height - 960 / 544) < 0.05
    bigger = height + 16, round((height + 16) * 960 / 544 / 16) * 16
    assert need(height=height, width=width) <= available < need(height=bigger[0], width=bigger[1])
    assert need(inputs=views) <= available < need(inputs=views + 1)

    check_memory(config, plan, need())  # exactly enough: no refusal
    with pytest.raises(ValueError, match="free memory or use a machine with more"):
        check_memory(config, plan, 2**20)


def test_refusal_names_lpips_when_scoring_full_size_targets_outweighs_the_network():
    """LPIPS-VGG scores 8 targets at a time at full size: at 960x544 that needs more than 32 views' forward pass."""
    config = preset("paper")
    plan = Plan(inputs=32, targets=20, height=544, width=960, frame_height=540, frame_width=960, keep_share=0.4)
    available = reconstruction_bytes(config, replace(plan, lpips=False))
    with pytest.raises(ValueError, match="--no-lpips would fit"):
        check_memory(config, plan, available)
