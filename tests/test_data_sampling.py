"""View selection: the training window sampler and the KMeans evaluation protocol (with its cache)."""

import json
import math

import numpy as np
import pytest
import torch

import data.view_sampling as vs
from data.view_sampling import eval_targets, kmeans_inputs, sample_train_views, select_eval_views


def draw(seed, **kw):
    args = dict(num_frames=300, num_inputs=32, num_targets=8, rng=np.random.default_rng(seed))
    args.update(kw)
    return sample_train_views(**args)


def test_train_window_counts_and_determinism():
    for seed in range(20):
        sel = draw(seed, reverse_prob=0.0, shuffle_prob=0.0)
        assert len(sel.inputs) == 32 == len(set(sel.inputs)) and len(sel.targets) == 8 == len(set(sel.targets))
        assert sel.inputs == sorted(sel.inputs)
        lo, hi = min(sel.inputs), max(sel.inputs)
        assert 64 <= hi - lo <= 128  # linspace reaches both ends of the window
        assert all(lo <= t <= hi for t in sel.targets)
        assert draw(seed, reverse_prob=0.0, shuffle_prob=0.0) == sel
    assert draw(0) == draw(0) and draw(0) != draw(1)


def test_train_order_reverse_and_shuffle():
    for seed in range(5):
        inputs = draw(seed, reverse_prob=1.0, shuffle_prob=0.0).inputs
        assert inputs == sorted(inputs, reverse=True)
    orders = {"sorted": 0, "reversed": 0, "other": 0}
    for seed in range(400):
        inputs = draw(seed).inputs
        if inputs == sorted(inputs):
            orders["sorted"] += 1
        elif inputs == sorted(inputs, reverse=True):
            orders["reversed"] += 1
        else:
            orders["other"] += 1
    # independent draws: shuffled half the time; of the rest, half reversed
    assert abs(orders["other"] / 400 - 0.5) < 0.08
    assert abs(orders["reversed"] / 400 - 0.25) < 0.07 and abs(orders["sorted"] / 400 - 0.25) < 0.07


def test_whole_video_window():
    sel = draw(0, num_frames=150, min_frame_dist=None, max_frame_dist=None, reverse_prob=0.0, shuffle_prob=0.0)
    assert sel.inputs[0] == 0 and sel.inputs[-1] == 149
    assert sel.inputs == [int(i) for i in np.linspace(0, 149, 32).astype(int)]


def orbit_c2w(n):
    """n cameras on a wobbly loop looking roughly inwards, OpenCV axes."""
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        a = 2 * math.pi * i / n
        pos = np.array([3 * math.cos(a), 0.3 * math.sin(3 * a), 2 * math.sin(a)])
        fwd = -pos / np.linalg.norm(pos)
        right = np.cross([0.0, 1.0, 0.0], fwd)
        right /= np.linalg.norm(right)
        c2w[i, :3, 0], c2w[i, :3, 1], c2w[i, :3, 2], c2w[i, :3, 3] = right, np.cross(fwd, right), fwd, pos
    return c2w


def test_kmeans_selection_protocol():
    c2w = orbit_c2w(120)
    inputs = kmeans_inputs(c2w, 16, every=8)
    assert len(inputs) == 16 == len(set(inputs)) and inputs == sorted(inputs)
    assert not set(inputs) & set(eval_targets(120, 8))  # never a target frame
    assert kmeans_inputs(c2w, 16, every=8) == inputs  # deterministic
    assert eval_targets(20, 8) == [0, 8, 16] and eval_targets(20, None) == []
    assert kmeans_inputs(c2w[:20], 20, every=None) == list(range(20))  # nothing held out: every frame is a candidate


def test_kmeans_returns_distinct_frames_when_centroids_share_a_nearest_frame():
    c2w = np.tile(np.eye(4), (40, 1, 1))
    c2w[:, 0, 3] = np.repeat(np.arange(4), 10)  # 4 positions, 10 identical cameras each
    inputs = kmeans_inputs(c2w, 12, every=8)
    assert len(set(inputs)) == 12 and not set(inputs) & set(range(0, 40, 8))


def test_eval_selection_cache(tmp_path, monkeypatch):
    c2w = orbit_c2w(64)
    scene_dir = tmp_path / "scene"
    scene_dir.mkdir()
    first = select_eval_views(c2w, 8, cache_dir=tmp_path / "cache", scene_id="orbit")
    files = list((tmp_path / "cache" / "eval_views").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["inputs"] == first.inputs
    assert not any(scene_dir.iterdir())  # nothing written next to the scene
    monkeypatch.setattr(vs, "kmeans_inputs", lambda *a, **k: pytest.fail("cache not used"))
    assert select_eval_views(c2w, 8, cache_dir=tmp_path / "cache") == first
    assert select_eval_views(c2w, 8, precomputed={"8/8": [3, 1, 2, 4, 5, 6, 7, 9]}).inputs == [1, 2, 3, 4, 5, 6, 7, 9]
    monkeypatch.undo()
    other = c2w.copy()
    other[0, 0, 3] += 1e-3  # different cameras, different key
    select_eval_views(other, 8, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "eval_views").glob("*.json"))) == 2


def test_default_cache_dir_respects_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("LONGLRM_SPLAT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert vs.default_cache_dir() == tmp_path / "longlrm-splat"
    monkeypatch.setenv("LONGLRM_SPLAT_CACHE", str(tmp_path / "x"))
    assert vs.default_cache_dir() == tmp_path / "x"


def test_eval_sample_uses_kmeans_inputs_and_fold_targets(tmp_path):
    from data.config import DataConfig, ResolutionConfig, ViewConfig
    from data.pipeline import SampleBuilder
    from data.scene import Scene

    c2w = torch.from_numpy(orbit_c2w(40))
    images = torch.rand(40, 8, 12, 3)
    scene = Scene.from_arrays("orbit", images, torch.tensor([[10.0, 10.0, 6.0, 4.0]]).expand(40, 4), c2w)
    config = DataConfig(views=ViewConfig(num_inputs=6), resolution=ResolutionConfig(size=8),
                        eval_cache_dir=str(tmp_path))
    sample = SampleBuilder(config, "eval")(scene, np.random.default_rng(0))
    assert sample.target_indices.tolist() == [0, 8, 16, 24, 32]
    assert sample.input_indices.tolist() == kmeans_inputs(c2w, 6, 8)
