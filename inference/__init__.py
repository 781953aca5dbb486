"""Reconstruction from posed views: the feed-forward pipeline, its outputs and the commands running it.

    from data import open_scene
    from inference import Options, reconstruct
    from model import load_model

    result = reconstruct(open_scene("path/to/scene"), load_model(path), Options(num_views=32, holdout=True))
    result.gaussians            # world-frame Gaussians [N], in memory; nothing is written without out_dir
    result.metrics              # held-out PSNR / SSIM / LPIPS

The names are imported with the package, not on first use as in `model` and `data`: `reconstruct` is
also the name of its module, and a submodule imported first would take the package attribute.
The commands are inference/infer.py (`longlrm-infer`) and inference/evaluate.py (`longlrm-evaluate`).
"""

from inference.demo import demo_scene
from inference.reconstruct import Options, Result, reconstruct

__all__ = ["Options", "Result", "demo_scene", "reconstruct"]
