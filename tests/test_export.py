import torch

from inference.checkpoint import load_checkpoint
from train.export import export
from tests.test_infer import write_checkpoint


def test_fp16_export_loads_back_with_its_config(tmp_path):
    source = write_checkpoint(tmp_path / "full.safetensors")
    out = export(source, tmp_path / "shipped" / "model.safetensors", fp16=True)
    original = load_checkpoint(source)
    shipped = load_checkpoint(out)
    assert shipped.model.config == original.model.config
    assert shipped.resolution == {"mode": "full", "size": 32} and shipped.num_views == 4
    for (name, a), (_, b) in zip(original.model.state_dict().items(), shipped.model.state_dict().items()):
        assert b.dtype == torch.float32, name
        assert torch.equal(a.half().float(), b), name
