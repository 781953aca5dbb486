"""Map-style datasets (scene folders, procedural scenes), the Batch container, collate and the data config."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.batch import Batch, collate
from data.config import DataConfig, ResolutionConfig, ViewConfig
from data.datasets import ProceduralDataset, SceneFolderDataset
from data.errors import SceneError
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from model.typed_config import from_dict, to_dict

CONFIG = DataConfig(views=ViewConfig(num_inputs=4, num_targets=2, min_frame_dist=5, max_frame_dist=8),
                    resolution=ResolutionConfig(size=16))
# orbit paths are the cheapest to generate; the sampling under test does not depend on the path kind
TINY = ProceduralConfig.preset("tiny", num_frames=10, width=32, height=24, shadows=False, path="orbit")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    proc = generate_scene(TINY.replace(seed=5))
    for batch, name in [("1K", "aa"), ("1K", "bb"), ("2K", "cc")]:
        write_dl3dv_scene(proc, root / batch / name)
    return root


def test_scene_folder_dataset_batches(root):
    ds = SceneFolderDataset(root, CONFIG, seed=1)
    assert [p.name for p in ds.paths] == ["aa", "bb", "cc"]
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate)))
    assert isinstance(batch, Batch) and batch.scene_ids == ["aa", "bb"]
    assert batch.input_images.shape == (2, 4, 16, 16, 3) and batch.target_images.shape == (2, 2, 16, 16, 3)
    assert batch.input_cameras.c2w.shape == (2, 4, 4, 4) and batch.input_cameras.intrinsics.shape == (2, 4, 4)
    assert batch.normalization.shape == (2, 4, 4) and batch.normalization.dtype == torch.float64
    assert batch.input_indices.shape == (2, 4) and batch.target_indices.shape == (2, 2)
    # deterministic per (seed, epoch, index); a new epoch draws new views
    again = ds[0]
    assert torch.equal(again.input_indices, batch.input_indices[0])
    assert torch.equal(again.input_images, batch.input_images[0])
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i].input_indices, batch.input_indices[i]) for i in range(2))
    moved = batch.to("cpu", torch.bfloat16)
    assert moved.input_images.dtype == torch.bfloat16 and moved.normalization.dtype == torch.float64


def test_scene_list_file_and_eval_mode(root, tmp_path):
    listing = root / "list.txt"
    listing.write_text("# scenes\n1K/aa\n2K/cc\n")
    ds = SceneFolderDataset(listing, dataclasses.replace(CONFIG, eval_cache_dir=str(tmp_path)), mode="eval")
    assert len(ds) == 2
    sample = ds[1]
    assert sample.scene_id == "cc" and sample.target_indices.tolist() == [0, 8]
    assert not set(sample.input_indices.tolist()) & {0, 8}


def test_bad_scene_raises_or_is_skipped(root, tmp_path):
    bad = tmp_path / "bad"
    write_dl3dv_scene(generate_scene(TINY.replace(seed=6, num_frames=3)), bad)  # too short for 4 inputs
    paths = [bad, root / "1K" / "aa"]
    with pytest.raises(SceneError, match="3 frames"):
        SceneFolderDataset(paths, CONFIG)[0]
    ds = SceneFolderDataset(paths, CONFIG, on_error="skip")
    with pytest.warns(UserWarning, match="skipping scene"):
        assert ds[0].scene_id == "aa"
    assert ds.skipped == 1


def test_procedural_dataset_is_deterministic_per_index():
    a = ProceduralDataset(3, CONFIG, procedural=TINY, seed=2)
    b = ProceduralDataset(3, CONFIG, procedural=TINY, seed=2)
    s1, s2 = a[1], b[1]
    assert s1.scene_id == s2.scene_id == "procedural_orbit_1"
    assert torch.equal(s1.input_images, s2.input_images) and torch.equal(s1.target_cameras.c2w, s2.target_cameras.c2w)
    assert a[1].scene_id != a[0].scene_id
    with pytest.raises(IndexError):
        a[3]


def test_collate_refuses_mixed_shapes(root):
    ds = SceneFolderDataset(root, CONFIG)
    other = SceneFolderDataset(root, dataclasses.replace(CONFIG, resolution=ResolutionConfig(size=8)))
    with pytest.raises(ValueError, match="batch size 1"):
        collate([ds[0], other[0]])


def test_typed_config_round_trip():
    data = DataConfig(views=ViewConfig(num_inputs=16, min_frame_dist=None, max_frame_dist=None),
                      resolution=ResolutionConfig(mode="full", size=540, fov_min_ratio=0.77))
    assert from_dict(DataConfig, to_dict(data)) == data
    with pytest.raises(ValueError, match="both be set"):
        ViewConfig(min_frame_dist=None)
    assert np.isclose(DataConfig().scene_scale, 1.0)
