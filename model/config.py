"""Typed configuration of the Long-LRM network, with named presets.

`paper` reproduces the official architecture exactly (and so loads the released checkpoint);
`small` is sized for training on a CPU; `tiny` is for tests and demos.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from model.transformer import FLASH_MAX_HEAD_DIM


@dataclass
class MambaConfig:
    d_state: int = 256
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256  # chunk of the CUDA kernel (the official value)
    # Chunk of the pure-PyTorch scan. Results do not depend on it (beyond float rounding), only speed
    # does; 64 measured fastest on a 2-core AVX-512 CPU at d_state 256 (bench/bench_ssd.py).
    cpu_chunk_size: int = 64
    A_init_range: tuple[float, float] = (1.0, 16.0)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.A_init_range = tuple(self.A_init_range)  # YAML gives a list
        if not 0 < self.A_init_range[0] <= self.A_init_range[1]:
            raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {self.A_init_range}")
        if min(self.d_state, self.d_conv, self.expand, self.headdim, self.ngroups,
               self.chunk_size, self.cpu_chunk_size) < 1:
            raise ValueError(f"Mamba sizes must be positive: {self}")


@dataclass
class GaussianHeadConfig:
    sh_degree: int = 3
    max_dist: float = 500.0  # distances along the ray are sigmoid(.) * max_dist
    scale_bias: float = -6.9  # log-scale = min(raw + scale_bias, scale_max)
    scale_max: float = -1.2
    opacity_bias: float = -2.0  # opacity logit = raw + opacity_bias
    views_per_chunk: int = 8  # the head decodes this many views at a time to bound memory

    def __post_init__(self) -> None:
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if self.max_dist <= 0 or self.views_per_chunk < 1:
            raise ValueError(f"max_dist and views_per_chunk must be positive: {self}")

    @property
    def channels(self) -> int:
        """Per-Gaussian outputs: 3 distance logits, SH, 3 log-scales, 4 quaternion, 1 opacity."""
        return 3 + 3 * (self.sh_degree + 1) ** 2 + 3 + 4 + 1


@dataclass
class ModelConfig:
    patch_size: int = 8
    dim: int = 256  # token width before the merge
    merged_dim: int = 1024  # token width after the merge
    merge_before: int | None = 8  # index of the first block after the 2x2 token merge; None: no merge
    blocks: str = "mmmmmmmt" * 3  # one letter per block: m = bidirectional Mamba2, t = transformer
    num_global_tokens: int = 2
    attn_head_dim: int = 64
    mlp_ratio: int = 4
    mamba: MambaConfig = field(default_factory=MambaConfig)
    gaussians: GaussianHeadConfig = field(default_factory=GaussianHeadConfig)
    checkpointing: bool = False  # per-block activation checkpointing while training
    mamba_backend: str = "auto"  # "auto" | "kernel" (mamba_ssm, CUDA) | "torch"
    attention_backend: str = "auto"  # "auto" | "flash" (flash-attn, CUDA) | "sdpa"

    def __post_init__(self) -> None:
        if not self.blocks or set(self.blocks) - {"m", "t"}:
            raise ValueError(f"blocks must be a non-empty string of 'm' and 't', got {self.blocks!r}")
        if self.merge_before is not None:
            if not 0 <= self.merge_before < len(self.blocks):
                raise ValueError(f"merge_before must index a block (0..{len(self.blocks) - 1}), "
                                 f"got {self.merge_before}")
            if self.merged_dim % self.dim:
                raise ValueError(f"merged_dim ({self.merged_dim}) must be a multiple of dim ({self.dim}): "
                                 "the merge is a grouped convolution with one group per input channel")
        if self.attn_head_dim < 1:
            raise ValueError(f"attn_head_dim must be positive, got {self.attn_head_dim}")
        if self.attention_backend == "flash" and (self.attn_head_dim % 8 or self.attn_head_dim > FLASH_MAX_HEAD_DIM):
            raise ValueError(f"attention_backend 'flash' needs attn_head_dim a multiple of 8 up to "
                             f"{FLASH_MAX_HEAD_DIM} (flash-attn's limits), got {self.attn_head_dim}; "
                             "use attention_backend 'auto' or 'sdpa'")
        for width in self.widths:
            if width % self.attn_head_dim:
                raise ValueError(f"width {width} is not a multiple of attn_head_dim {self.attn_head_dim}")
            if (self.mamba.expand * width) % self.mamba.headdim:
                raise ValueError(f"Mamba inner width {self.mamba.expand * width} is not a multiple of "
                                 f"headdim {self.mamba.headdim}")
            if (self.mamba.expand * width // self.mamba.headdim) % self.mamba.ngroups:
                raise ValueError(f"Mamba heads at width {width} are not a multiple of ngroups {self.mamba.ngroups}")
        if self.mamba_backend not in ("auto", "kernel", "torch"):
            raise ValueError(f"mamba_backend must be 'auto', 'kernel' or 'torch', got {self.mamba_backend!r}")
        if self.attention_backend not in ("auto", "flash", "sdpa"):
            raise ValueError(f"attention_backend must be 'auto', 'flash' or 'sdpa', got {self.attention_backend!r}")

    @property
    def widths(self) -> list[int]:
        """Token width of every block."""
        return [self.merged_dim if self.merge_before is not None and i >= self.merge_before else self.dim
                for i in range(len(self.blocks))]

    @property
    def output_patch_size(self) -> int:
        """Pixels per side covered by one token at the head (the merge doubles the patch)."""
        return self.patch_size * (2 if self.merge_before is not None else 1)


PRESETS: dict[str, ModelConfig] = {
    # The official {7 Mamba2 + 1 transformer} x 3 with a merge before block 9: 141.9M parameters.
    "paper": ModelConfig(),
    # CPU training at 8-32 views of 128-256 px: ~4M parameters, the paper's structure at a quarter
    # width. Its one transformer block comes after the merge: attention before it would run over
    # 1024 tokens per 256x256 view and dominate the cost (quadratic in views) on a CPU. Heads keep
    # the paper's 64 channels (4 heads): CPU attention is 10-20% faster than with 8 heads of 32.
    "small": ModelConfig(
        dim=64,
        merged_dim=256,
        merge_before=4,
        blocks="mmmmmmmt",
        mamba=MambaConfig(d_state=64, headdim=32),
        gaussians=GaussianHeadConfig(sh_degree=1),
    ),
    # Tests and demos: ~0.2M parameters, every kind of block and the merge, in milliseconds.
    # 4x4 patches (8x8 after the merge) keep the head small; images must be multiples of 8.
    "tiny": ModelConfig(
        patch_size=4,
        dim=32,
        merged_dim=64,
        merge_before=3,
        blocks="mmtmt",
        attn_head_dim=16,
        mamba=MambaConfig(d_state=16, headdim=16, cpu_chunk_size=32),
        gaussians=GaussianHeadConfig(sh_degree=1),
    ),
}


def preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset (presets themselves are never mutated)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {sorted(PRESETS)}")
    base = PRESETS[name]
    return replace(base, mamba=replace(base.mamba), gaussians=replace(base.gaussians))
