"""The network's numeric precision at inference: `auto`, `fp32` or `bf16`, resolved once per device.

The authors evaluate their model under bf16 autocast. bf16 here is `LongLRM.set_precision`: the
weights of every linear layer and of the token merge are converted once, so the matmuls run in bf16
with fp32 accumulation, exactly as autocast would run them (tests/test_bf16.py), without autocast's
per-call weight casts. `auto` picks bf16 where the hardware multiplies it natively: GPUs of compute
capability 8.0 and newer (where it is also what lets flash-attn run: it takes only fp16/bf16), and
CPUs with AMX or AVX512-BF16 (model/cpu_features.py; 2.7x faster for the `paper` network on a
Sapphire Rapids core, bench/bench_model.py). Elsewhere bf16 is emulated and slow, so `auto` keeps fp32.

What would show bf16's rounding stays fp32 whatever the choice: the residual stream between blocks,
norm statistics, the scan's step sizes, decays and state (`model.ssd`), the rays, the Gaussian head's
outputs, rendering and losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.cpu_features import native_bf16_matmul
from model.fast_path import cuda_capability, log_choice

PRECISIONS = ("auto", "fp32", "bf16")
BF16_NATIVE_CAPABILITY = (8, 0)  # Ampere: the first NVIDIA GPUs with bf16 tensor cores


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" or "bf16"
    device_type: str  # where the network runs
    reason: str  # why this precision, for the log and the check command

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    def apply(self, model):
        """Set `model` (a LongLRM) to this precision, in place; returns it. Converting to bf16 rounds the
        weights for good: reload the checkpoint to run the same model in fp32 again."""
        return model.set_precision(self.dtype)

    def describe(self) -> str:
        """One line for logs and reports, e.g. 'bf16 on cuda (auto: compute capability 8.0 has ...)'."""
        return (f"{self.name} on {self.device_type} ({self.reason}); the residual stream, norms, the scan's "
                "state, rendering and the losses stay fp32")


def resolve_precision(requested: str, device: torch.device, capability: tuple[int, int] | None = None,
                      cpu_capabilities: dict | None = None) -> Precision:
    """The precision `requested` means on `device`. capability: the GPU's, cpu_capabilities: the CPU's
    (as `torch.cpu.get_capabilities()`), each looked up when not given."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cuda":
        capability = capability or cuda_capability(device)
        native = capability >= BF16_NATIVE_CAPABILITY
        hardware = f"compute capability {capability[0]}.{capability[1]} {'has' if native else 'has no'} native bf16"
    elif device.type == "cpu":
        native, hardware = native_bf16_matmul(cpu_capabilities)
    else:
        native, hardware = False, f"no native bf16 detection for {device.type}"
    if requested == "auto":
        name, reason = ("bf16" if native else "fp32"), f"auto: {hardware}"
    else:
        name = requested
        reason = "requested" + ("" if native or name == "fp32" else f"; {hardware}: emulated, slow")
    precision = Precision(name, device.type, reason)
    log_choice("model.precision", f"network precision: {precision.describe()}")
    return precision
