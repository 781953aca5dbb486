"""Reconstruction from posed views: the feed-forward pipeline, its outputs and the commands running it.

    from data import open_scene
    from inference import Options, reconstruct
    from model import load_model

    result = reconstruct(open_scene("path/to/scene"), load_model(path), Options(num_views=32, holdout=True))
    result.gaussians            # world-frame Gaussians [N], in memory; nothing is written without out_dir
    result.metrics              # held-out PSNR / SSIM / LPIPS

Names are imported on first use (model/lazy_exports.py), so `import inference.cli` stays light.
The commands are inference/infer.py (`longlrm-infer`) and inference/evaluate.py (`longlrm-evaluate`).
"""

from model.lazy_exports import export_lazily

export_lazily(__name__, {"Options": "inference.reconstruct", "Result": "inference.reconstruct",
                         "reconstruct": "inference.reconstruct", "demo_scene": "inference.demo"})
