"""`python infer.py --check`: what will run on this machine, and why, before anything runs.

Reports torch and its CUDA build, the GPUs and their compute capability, which of the optional CUDA
packages import, and, for a checkpoint's network at the chosen precision, which implementation each
operation takes. The paths come from the rules the model applies at run time
(`conv_kernel_blocker`, `kernel_layout_blocker`, `flash_blocker`, `native_blocker`, the renderer's
backend choice), asked about the network's own modules, so the report says what the run will do.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform

import torch
from torch import Tensor

from model import mamba2, ssd, transformer
from model.fast_path import cuda_capability
from model.longlrm import LongLRM
from model.mamba2 import BiMamba2
from model.precision import Precision
from model.render.api import _choose_backend

# The optional CUDA packages: (distribution on PyPI, the module the model imports from it).
PACKAGES = {
    "mamba_ssm": ("mamba-ssm", "mamba_ssm.ops.triton.ssd_combined"),
    "causal_conv1d": ("causal-conv1d", "causal_conv1d"),
    "flash_attn": ("flash-attn", "flash_attn"),
    "gsplat": ("gsplat", "gsplat"),
}


def report(model: LongLRM, device: torch.device, precision: Precision, model_name: str) -> str:
    """The whole check, as `python infer.py --check` prints it."""
    config = model.config
    widths = f"{config.dim}" + (f" -> {config.merged_dim}" if config.merge_before is not None else "")
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    lines = environment_lines(device) + [
        f"network: {model_name}, blocks {config.blocks}, widths {widths}, {parameters:.2f}M parameters",
        f"precision: {precision.describe()}",
        "paths:",
    ]
    lines += [f"  {operation}: {path}" for operation, path in paths(model, device, precision)]
    return "\n".join(lines)


def environment_lines(device: torch.device) -> list[str]:
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    lines = [f"python {platform.python_version()}, torch {torch.__version__} ({build})"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"GPU {i}: {props.name}, compute capability {props.major}.{props.minor}, "
                         f"{props.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("CUDA: not available")
    lines += [f"device: {device}", "optional CUDA packages:"]
    lines += [f"  {name:<14} {package_status(*where)}" for name, where in PACKAGES.items()]
    return lines


def package_status(distribution: str, module: str) -> str:
    """'not installed', '<version>, imports' or '<version> installed, import fails: <error>'."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - a broken CUDA install fails with anything from OSError to RuntimeError
        first = (str(err).strip().splitlines() or [""])[0]
        return f"{version} installed, import fails: {type(err).__name__}: {first}"
    return f"{version}, imports"


def paths(model: LongLRM, device: torch.device, precision: Precision) -> list[tuple[str, str]]:
    """(operation, the implementation it takes on `device` and why) for each kind of block of `model`."""
    config = model.config
    capability = cuda_capability(device)
    dtype = precision.dtype  # what the kernels are fed: the projections in front of them return it
    mamba = _by_width(model, "m")  # {width: [Mamba2Block]}
    attention = _by_width(model, "t")  # {width: [TransformerBlock]}
    out = []
    if mamba:
        # model.ssd.scan's rule and wording
        if config.mamba_backend == "torch":
            blocker = "requested"
        elif not ssd.kernel_available():
            blocker = "mamba_ssm not importable"
        else:
            blocker = None if device.type == "cuda" else f"tensors on {device}"
        out.append((f"SSD scan, {_count(sum(map(len, mamba.values())), 'Mamba2 block')}",
                    _path(blocker, "mamba_ssm mamba_chunk_scan_combined (CUDA kernel)", "pure-PyTorch chunk_scan",
                          config.mamba_backend)))
        if device.type == "cpu":  # model.ssd._native_scan, without gradients
            blocker = ssd.native_scan_blocker(dtype, config.mamba.d_state, config.mamba.cpu_chunk_size)
            out.append((f"SSD chunk_scan, {_count(sum(map(len, mamba.values())), 'Mamba2 block')}",
                        "native CPU kernel" if blocker is None else f"PyTorch ({blocker})"))
    for width, blocks in mamba.items():
        layer = blocks[0].mamba
        scan = layer.mamba_scans[0]
        operation = (f"causal conv1d, width {width}, {_count(len(blocks), 'block')}, "
                     f"in_proj width {layer.in_proj.out_features}")
        if device.type == "cpu" and mamba2.cpu_conv_blocker(config.mamba_backend, scan.conv1d.kernel_size[0]) is None:
            out.append((operation, "native CPU kernel"))  # model.mamba2.BiMamba2.cpu_kernels, without gradients
            continue
        blocker = "requested" if config.mamba_backend == "torch" else mamba2.conv_kernel_blocker(
            mamba2.causal_conv1d_fn is not None, device.type, capability, scan.conv1d.kernel_size[0], dtype)
        kernel = "causal-conv1d CUDA kernel"
        if blocker is None:
            copied = mamba2.kernel_layout_blocker(_conv_input(layer, dtype).transpose(1, 2))
            kernel += f", its input copied on each call ({copied})" if copied else ", in_proj slice passed as is"
        out.append((operation, _path(blocker, kernel, "PyTorch depthwise convolution (oneDNN)", config.mamba_backend)))
    for width, blocks in attention.items():
        head_dim = blocks[0].attn.head_dim
        operation = f"attention, width {width}, head dim {head_dim}, {_count(len(blocks), 'block')}"
        blocker = "requested" if config.attention_backend == "sdpa" else transformer.flash_blocker(
            transformer.flash_attn_func is not None, device.type, capability, dtype, head_dim)
        if device.type == "cpu" and config.attention_backend == "auto":
            blocker = transformer.native_blocker_here(dtype, head_dim)
            if blocker is None:
                out.append((operation, "native CPU kernel"))  # model.transformer.attention, without gradients
                continue
        out.append((operation, _path(blocker, "flash-attn flash_attn_func", "torch scaled_dot_product_attention",
                                     config.attention_backend)))
    out.append(("rendering", f"{_choose_backend('auto', torch.empty(0, device=device))} backend, fp32"))
    return out


def _path(blocker: str | None, fast: str, twin: str, backend: str) -> str:
    if blocker is None:
        return fast
    if backend in ("kernel", "flash"):
        return f"error at run time, backend {backend!r} was requested ({blocker})"
    return f"{twin} ({blocker})"


def _by_width(model: LongLRM, kind: str) -> dict[int, list[torch.nn.Module]]:
    """The blocks of one kind ("m" Mamba2, "t" transformer) grouped by token width."""
    groups: dict[int, list[torch.nn.Module]] = {}
    for letter, width, block in zip(model.config.blocks, model.config.widths, model.blocks):
        if letter == kind:
            groups.setdefault(width, []).append(block)
    return groups


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _conv_input(layer: BiMamba2, dtype: torch.dtype) -> Tensor:
    """What `layer`'s scans convolve: the xBC columns of its in_proj output [b, l, in_proj], on the meta
    device, so its strides and alignment are the real ones and nothing is allocated."""
    scan = layer.mamba_scans[0]
    zxbcdt = torch.empty(1, 2, layer.in_proj.out_features, dtype=dtype, device="meta")  # order: z, xBC, dt
    return zxbcdt[..., scan.d_inner:scan.d_inner + scan.conv1d.in_channels]  # [b, l, conv_dim]
