import torch

from model.pretrained import load_model
from train.export import export
from tests.support import write_checkpoint


def test_fp16_export_loads_back_with_its_config(tmp_path):
    source = write_checkpoint(tmp_path / "full.safetensors")
    out = export(source, tmp_path / "shipped" / "model.safetensors", fp16=True)
    original = load_model(source)
    shipped = load_model(out)
    assert shipped.model.config == original.model.config
    assert (shipped.resolution.mode, shipped.resolution.size, shipped.num_views) == ("full", 32, 4)
    assert shipped.preprocessing == original.preprocessing  # recorded explicitly, read back the same
    for (name, a), (_, b) in zip(original.model.state_dict().items(), shipped.model.state_dict().items()):
        assert b.dtype == torch.float32, name
        assert torch.equal(a.half().float(), b), name


def test_export_records_the_training_preprocessing(tmp_path):
    """A stage-3 run prunes while training: its export records that keep rule, its filter and scale."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from model.build import build_model
    from model.typed_config import to_dict

    model = build_model("tiny")
    train = {"data": {"resolution": {"mode": "full", "size": 32, "resample": "bilinear"}, "scene_scale": 1.1},
             "prune": {"enabled": True, "prune_ratio": 0.6, "random_ratio": 0.1}}
    source = tmp_path / "run.safetensors"
    save_file(model.state_dict(), str(source), metadata={"model_config": json.dumps(to_dict(model.config)),
                                                          "train_config": json.dumps(train)})
    out = export(source, tmp_path / "model.safetensors")
    with safe_open(str(out), framework="pt") as f:
        recorded = json.loads(f.metadata()["preprocessing"])
    assert recorded == {"resample": "bilinear", "scene_scale": 1.1, "keep_ratio": 0.4, "random_ratio": 0.1,
                        "prune_seed": 0, "min_opacity": 0.001}
    assert load_model(out).preprocessing.as_dict() == recorded
