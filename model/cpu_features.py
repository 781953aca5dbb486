"""Whether this CPU multiplies bfloat16 matrices natively, which is what makes bf16 inference pay off.

On x86, oneDNN (torch's CPU matmul library for bfloat16) runs bf16 products on AMX tiles
(`amx_bf16`, Intel Sapphire Rapids and later) or AVX512-BF16 dot products (`avx512_bf16`, Intel
Cooper Lake and later, AMD Zen 4 and later). On a Sapphire Rapids core a 2048^3 matmul ran at
1.1 TFLOP/s in bf16 against 0.18 in float32. Without those instructions oneDNN emulates bf16 with
float32 arithmetic plus conversions (its release notes say so for AVX-512 CPUs): no gain, so bf16
stays opt-in there. The flags come from torch's own CPU detection (cpuinfo, `torch.cpu.get_capabilities()`).
"""

from __future__ import annotations

import platform

import torch

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bf16_matmul(capabilities: dict | None = None) -> tuple[bool, str]:
    """(True if bfloat16 matmuls run on native instructions here, a one-line reason for the log).

    `capabilities` defaults to `torch.cpu.get_capabilities()`; pass a dict to decide for another CPU.
    """
    if not torch.backends.mkldnn.is_available():
        return False, "torch was built without oneDNN, which runs its CPU bfloat16 matmuls"
    caps = torch.cpu.get_capabilities() if capabilities is None else capabilities
    arch = caps.get("architecture", platform.machine())
    if arch not in ("x86_64", "x86"):
        return False, f"{arch} CPU: native bfloat16 matmul detection covers x86 (amx_bf16, avx512_bf16) only"
    found = [flag for flag in NATIVE_BF16_FLAGS if caps.get(flag)]
    if found:
        return True, f"CPU has {' and '.join(found)}"
    return False, f"CPU lacks {' and '.join(NATIVE_BF16_FLAGS)} (bfloat16 matmuls would be emulated in float32)"
