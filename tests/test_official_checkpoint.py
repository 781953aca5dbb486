import argparse

import pytest
import torch

from model.build import build_model
from model.config import preset
from model.official_checkpoint import (check_state_dict, load_official_checkpoint, official_to_ours,
                                       ours_to_official)


def official_paper_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of the official LongLRM state dict (dl3dv_i540 config) with its shape, written out
    from the official module definitions: tokenizer Linear(9*8*8 -> 256, no bias), 2 global tokens,
    input LayerNorm(bias=False), 24 blocks "mmmmmmmt" x 3 with merge layer 8 (dims 256 -> 1024),
    Mamba2 d_state 256 / expand 2 / headdim 64 / ngroups 1 / d_conv 4, transformer head_dim 64 and
    MLP x4 without biases, decoder LayerNorm(1024) + Linear(1024 -> 59 * 16 * 16, no bias)."""
    shapes = {
        "global_token_init": (1, 2, 256),
        "tokenizer.weight": (256, 576),
        "input_layernorm.weight": (256,),
        "processor.resize_blocks.0.weight": (1024, 256),
        "processor.resize_blocks.0.bias": (1024,),
        "processor.merge_blocks.0.weight": (1024, 1, 2, 2),
        "processor.merge_blocks.0.bias": (1024,),
        "tokenDecoder.0.weight": (1024,),
        "tokenDecoder.1.weight": (15104, 1024),
    }
    mamba = {  # d_model: (in_proj rows = 2*d_inner + 2*d_state + heads, d_inner, heads, conv channels)
        256: (1544, 512, 8, 1024),
        1024: (4640, 2048, 32, 2560),
    }
    for i, kind in enumerate("mmmmmmmt" * 3):
        d = 256 if i < 8 else 1024
        pre = f"processor.blocks.{i}."
        if kind == "t":
            shapes.update({
                pre + "norm1.weight": (d,),
                pre + "attn.qkv.weight": (3 * d, d),
                pre + "attn.proj.weight": (d, d),
                pre + "norm2.weight": (d,),
                pre + "mlp.fc1.weight": (4 * d, d),
                pre + "mlp.fc2.weight": (d, 4 * d),
            })
            continue
        rows, inner, heads, conv = mamba[d]
        shapes.update({
            pre + "norm.weight": (d,),
            pre + "mamba.in_proj.weight": (rows, d),
            pre + "mamba.out_proj.weight": (d, inner),
        })
        for s in (0, 1):
            scan = f"{pre}mamba.mamba_scans.{s}."
            shapes.update({
                scan + "conv1d.weight": (conv, 1, 4),
                scan + "conv1d.bias": (conv,),
                scan + "dt_bias": (heads,),
                scan + "A_log": (heads,),
                scan + "D": (heads,),
                scan + "norm.weight": (inner,),
            })
    return shapes


AUXILIARY = {"perceptual_loss.blocks.0.0.weight": (64, 3, 3, 3), "perceptual_loss.mean": (1, 3, 1, 1),
             "depth_anything.pretrained.cls_token": (1, 1, 384)}


def test_official_key_list_is_complete():
    shapes = official_paper_shapes()
    assert len(shapes) == 9 + 3 * (7 * 15 + 6)
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 141_918_160


def test_paper_model_loads_official_names_strictly_and_round_trips():
    official = {k: torch.empty(s) for k, s in {**official_paper_shapes(), **AUXILIARY}.items()}
    ours, dropped = official_to_ours(official)
    assert sorted(dropped) == sorted(AUXILIARY)
    model = build_model("paper", device="meta")
    check_state_dict(model.state_dict(), ours)
    model.load_state_dict(ours, strict=True, assign=True)
    assert model.tokenizer.proj.weight.data_ptr() == ours["tokenizer.proj.weight"].data_ptr()
    assert model.head.proj.weight.data_ptr() == official["tokenDecoder.1.weight"].data_ptr()
    back = ours_to_official(ours)
    assert set(back) == set(official_paper_shapes())
    assert all(back[k] is official[k] for k in back)
    # and from our side: our names -> official names -> our names is the identity
    ours_names = {k: v for k, v in build_model("paper", device="meta").state_dict().items()}
    official_names = ours_to_official(ours_names)
    assert {k: tuple(v.shape) for k, v in official_names.items()} == official_paper_shapes()
    again, _ = official_to_ours(official_names)
    assert list(again) == list(ours_names) and all(again[k] is ours_names[k] for k in again)


def test_mismatches_are_listed_by_name():
    model_sd = build_model("paper", device="meta").state_dict()
    official = {k: torch.empty(s, device="meta") for k, s in official_paper_shapes().items()}
    del official["processor.blocks.3.mamba.mamba_scans.1.D"]
    official["processor.blocks.99.extra"] = torch.empty(1, device="meta")
    official["tokenDecoder.1.weight"] = torch.empty(14, 1024, device="meta")
    with pytest.raises(ValueError) as err:
        check_state_dict(model_sd, official_to_ours(official)[0])
    message = str(err.value)
    assert "blocks.3.mamba.mamba_scans.1.D" in message and "missing (1)" in message
    assert "blocks.99.extra" in message and "unexpected (1)" in message
    assert "head.proj.weight: checkpoint (14, 1024) vs model (15104, 1024)" in message


def test_load_file_wrapped_like_the_official_trainer(tmp_path):
    config = preset("tiny")
    source = build_model(config)
    official = ours_to_official(source.state_dict())
    official.update({k: torch.zeros(s) for k, s in AUXILIARY.items()})
    path = tmp_path / "checkpoint_000010000.pt"
    torch.save({"model": official, "optimizer": {"state": {}, "param_groups": []},
                "param_update_steps_done": 10000}, path)
    loaded = load_official_checkpoint(path, config=config)
    recipe = loaded.recipe
    assert loaded.step == 10000 and recipe.scene_scale == 1.35 and (recipe.width, recipe.height) == (960, 544)
    assert recipe.num_views == 32 and sorted(loaded.dropped_keys) == sorted(AUXILIARY)
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_pickled_objects_need_explicit_trust(tmp_path):
    config = preset("tiny")
    path = tmp_path / "ckpt.pt"
    torch.save({"model": ours_to_official(build_model(config).state_dict()), "args": argparse.Namespace(a=1)}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_official_checkpoint(path, config=config)
    assert load_official_checkpoint(path, config=config, allow_pickle=True).model is not None
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(tmp_path / "missing.pt")
