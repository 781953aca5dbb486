"""The network and everything it is made of, its Gaussians, cameras and renderer.

    from model import load_model, build_model, Gaussians, Cameras, rasterize

    loaded = load_model("checkpoints/demo/model.safetensors")   # or a run directory, or the official .pt
    out = loaded.model(images, cameras)                          # images [B, V, H, W, 3], cameras [B, V]
    renders = out.gaussians.scene(0).render(target_cameras)      # [T, H, W, 3]

Names are imported on first use, so `import model.cameras` does not load the whole network.
"""

from model.lazy_exports import export_lazily

export_lazily(__name__, {
    "LongLRM": "model.longlrm", "LongLRMOutput": "model.longlrm", "build_model": "model.build",
    "ModelConfig": "model.config", "preset": "model.config", "load_model": "model.pretrained",
    "LoadedModel": "model.pretrained", "Preprocessing": "model.pretrained", "Gaussians": "model.gaussians",
    "Cameras": "model.cameras", "rasterize": "model.render",
})
