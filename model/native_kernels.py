"""The network's native CPU kernels (csrc/, library torch.ops.network_cpu): compiled on first use,
chosen per call, logged once.

A Mamba2 block's causal conv and gated RMSNorm in one pass each, where PyTorch makes several
tensor-wide passes, and its chunked scan in one kernel (mamba2_*.cpp, model/ssd.py, model/mamba2.py);
flash-attention (attention.cpp, model/transformer.py); the blocks' pre-norms and residual adds
(norms.cpp, model/norms.py); the Gaussian head's activation (gaussian_head.cpp). The scan and
attention run their small matrix products on PyTorch's brgemm micro-kernels. They have no backward:
whenever a gradient is needed, or the tensors are not CPU float32 / bfloat16 ones, the PyTorch twin
next to each call runs instead (the twins are also the tests' oracles).
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor

from model.fast_path import log_choice
from model.native_build import load_library

SOURCES = ("mamba2_scan.cpp", "mamba2_gated_norm.cpp", "mamba2_conv.cpp",
           "norms.cpp", "gaussian_head.cpp", "network_ops.cpp", "attention.cpp")
HEADERS = ("network.h", "simd.h")
# The rasterizer's flags: FMA only where the code asks for it (so each loop rounds as its comment
# says), OpenMP for at::parallel_for.
CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno") + (
    # ATen's matrix transpose then takes FBGEMM's AVX2 / AVX-512 code, as inside PyTorch
    ("-DUSE_FBGEMM",) if "fbgemm" in torch.backends.quantized.supported_engines else ())
LDFLAGS = ("-fopenmp",)


@functools.cache
def _library():
    """torch.ops.network_cpu, or None (with a warning) where it cannot be built: the twins do the same work."""
    try:
        return load_library("network_cpu", SOURCES, HEADERS, CFLAGS, LDFLAGS, "the network's CPU kernels")
    except Exception as err:  # no compiler, no headers, ...
        logging.getLogger(__name__).warning("native CPU kernels unavailable, using PyTorch: %s", err)
        return None


def kernels(what: str, *tensors: Tensor):
    """`torch.ops.network_cpu` if its kernel for `what` can take these tensors (the first sets the
    dtype: float32 or bfloat16), else None for the PyTorch twin. The choice is logged once."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        reason = "gradients needed"
    elif any(t.device.type != "cpu" for t in tensors) or tensors[0].dtype not in (torch.float32, torch.bfloat16):
        reason = f"{tensors[0].device.type} {tensors[0].dtype} tensors"
    elif _library() is None:
        reason = "native kernels unavailable"
    else:
        log_choice(__name__, f"{what}: native CPU kernel")
        return _library()
    log_choice(__name__, f"{what}: PyTorch ({reason})")
    return None
