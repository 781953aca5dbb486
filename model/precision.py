"""The network's numeric precision at inference: `auto`, `fp32` or `bf16`, resolved once per device.

The authors evaluate their model under bf16 autocast. On GPUs with native bf16 (compute capability
8.0 and newer) that is also several times faster, and it is what lets flash-attn run at all (it takes
only fp16/bf16 inputs). Older GPUs have no bf16 arithmetic, so `auto` keeps fp32 there. On CPUs
`auto` keeps fp32; an explicit `bf16` runs the network under CPU bf16 autocast.

Only the network's matrix products change. The rays, the scan's state and step sizes
(`model.ssd`), the gated norms, the Gaussian head's outputs, rendering and losses run in fp32
whatever the choice: each of them disables autocast or casts to float32 itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.fast_path import cuda_capability, log_choice

PRECISIONS = ("auto", "fp32", "bf16")
BF16_NATIVE_CAPABILITY = (8, 0)  # Ampere: the first NVIDIA GPUs with bf16 tensor cores


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" or "bf16"
    device_type: str  # where the network runs, for autocast
    reason: str  # why this precision, for the log and the check command

    def autocast(self) -> torch.autocast:
        """The context the network's forward runs in: bf16 autocast, or autocast off for fp32."""
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.name == "bf16")

    def describe(self) -> str:
        """One line for logs and reports, e.g. 'bf16 autocast on cuda (auto: compute capability 8.0 has ...)'."""
        what = "fp32" if self.name == "fp32" else "bf16 autocast"
        return f"{what} on {self.device_type} ({self.reason}); rendering, the scan's state and the losses stay fp32"


def resolve_precision(requested: str, device: torch.device,
                      capability: tuple[int, int] | None = None) -> Precision:
    """The precision `requested` means on `device` (capability: the GPU's, looked up when not given)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cuda":
        capability = capability or cuda_capability(device)
        native = capability >= BF16_NATIVE_CAPABILITY
        gpu = f"compute capability {capability[0]}.{capability[1]}"
        if requested == "auto":
            name = "bf16" if native else "fp32"
            reason = f"auto: {gpu} {'has' if native else 'has no'} native bf16"
        else:
            name = requested
            reason = "requested" + ("" if native or name == "fp32" else f"; {gpu} emulates bf16 (slow)")
    else:
        name = "fp32" if requested == "auto" else requested
        reason = f"auto: fp32 on {device.type}" if requested == "auto" else "requested"
    precision = Precision(name, device.type, reason)
    log_choice("model.precision", f"network precision: {precision.describe()}")
    return precision

