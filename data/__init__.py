"""Scenes and samples: readers of every supported layout, view choice, the one sample builder.

    from data import open_scene, capture_sample
    scene = open_scene("path/to/scene")            # DL3DV, nerfstudio, opencv_cameras.json, COLMAP
    selection, sample = capture_sample(scene, config, holdout=True)

Names are imported on first use, so `import data.config` stays light. `open_scene` is also the name of
its module: importing that module must not bind the module where the function is exported.
"""

from model.lazy_exports import export_lazily

export_lazily(__name__, {
    "open_scene": "data.open_scene", "find_scenes": "data.open_scene", "Scene": "data.scene",
    "Sample": "data.batch", "SampleBuilder": "data.pipeline", "capture_sample": "data.pipeline",
    "DataConfig": "data.config",
})
