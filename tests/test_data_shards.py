"""Webdataset shards: byte-exact round trip, resumable conversion, node x worker split, corrupt samples."""

import dataclasses
import io
import json
import shutil
import tarfile
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from data.batch import collate
from data.config import DataConfig, ResolutionConfig, ViewConfig
from data.dl3dv.convert import main as convert
from data.dl3dv.scene import read_dl3dv
from data.dl3dv.shards import scene_from_sample, write_shards
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from data.streaming import ShardDataset

CONFIG = DataConfig(views=ViewConfig(num_inputs=4, num_targets=2, min_frame_dist=5, max_frame_dist=8),
                    resolution=ResolutionConfig(size=16))


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dl3dv") / "1K"
    proc = generate_scene(ProceduralConfig.preset("tiny", seed=21, num_frames=10, width=48, height=32))
    for i, name in enumerate(["a1", "b2", "c3"]):
        part = dataclasses.replace(proc, images=proc.images.roll(i, 0))  # different content per scene
        write_dl3dv_scene(part, root / name)
    return root


def members(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_round_trip_keeps_encoded_bytes(scene_root, tmp_path):
    assert convert(["--src", str(scene_root.parent), "--out", str(tmp_path), "--shard-size", "2"]) == 0
    shards = sorted(tmp_path.glob("shard-*.tar"))
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar"]
    stored = {**members(shards[0]), **members(shards[1])}
    for name in ("a1", "b2", "c3"):
        for i in range(10):
            source = (scene_root / name / "images_4" / f"frame_{i + 1:05d}.png").read_bytes()
            assert stored[f"{name}.{i:05d}.png"] == source  # never re-encoded
    sample = {"__key__": "b2", **{k.split(".", 1)[1]: v for k, v in stored.items() if k.startswith("b2.")}}
    from_shard, from_folder = scene_from_sample(sample), read_dl3dv(scene_root / "b2")
    assert torch.equal(from_shard.c2w, from_folder.c2w) and torch.equal(from_shard.intrinsics, from_folder.intrinsics)
    assert from_shard.names == from_folder.names
    assert torch.equal(from_shard.load_views([0, 9])[0], from_folder.load_views([0, 9])[0])
    seen = [s.scene_id for s in ShardDataset(tmp_path, CONFIG, resampled=False, shuffle_buffer=1)]
    assert sorted(seen) == ["a1", "b2", "c3"]


def test_conversion_resumes(scene_root, tmp_path, capsys):
    args = ["--src", str(scene_root), "--out", str(tmp_path), "--shard-size", "2"]
    assert convert(args) == 0
    first = (tmp_path / "shard-000000.tar").stat().st_mtime_ns
    (tmp_path / "shard-000001.tar").unlink()
    (tmp_path / "shard-000001.tar.partial").write_bytes(b"interrupted")
    assert convert(args) == 0
    assert (tmp_path / "shard-000000.tar").stat().st_mtime_ns == first
    assert (tmp_path / "shard-000001.tar").is_file() and not list(tmp_path.glob("*.partial"))
    assert "1 shards kept from an earlier run" in capsys.readouterr().out
    assert stored_keys(tmp_path) == ["a1", "b2", "c3"]


def stored_keys(out) -> list[str]:
    """Every scene key in every shard under `out`, duplicates included, sorted."""
    return sorted(name.split(".")[0] for shard in out.glob("shard-*.tar") for name in members(shard)
                  if name.endswith(".cameras.json"))


def test_rerun_after_adding_scenes_converts_each_scene_once(scene_root, tmp_path, capsys):
    """Scenes added to --src between runs sort among the old ones: a rerun going by shard numbers
    would keep shards whose scene groups have shifted, losing one scene and storing another twice."""
    src = tmp_path / "src"
    shutil.copytree(scene_root, src / "1K")
    out = tmp_path / "shards"
    args = ["--src", str(src), "--out", str(out), "--shard-size", "2"]
    assert convert(args) == 0
    assert stored_keys(out) == ["a1", "b2", "c3"]
    shutil.copytree(src / "1K" / "a1", src / "1K" / "a0")  # sorts first
    shutil.copytree(src / "1K" / "b2", src / "1K" / "b3")  # sorts between b2 and c3
    shutil.copytree(src / "1K" / "c3", src / "2K" / "c3")  # same name, another batch folder: another scene
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    assert convert(args) == 0
    assert stored_keys(out) == ["a0", "a1", "b2", "b3", "c3", "c3"]  # each scene once; c3 twice: two scenes
    assert "2 shards kept from an earlier run" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar") if p.name in before} == before
    sources = sorted(e["source"] for info in out.glob("shard-*.json") for e in json.loads(info.read_text())["samples"])
    assert sources == ["1K/a0", "1K/a1", "1K/b2", "1K/b3", "1K/c3", "2K/c3"]
    index = json.loads((out / "index.json").read_text())
    assert index["num_samples"] == 6 and len(index["shards"]) == 4
    assert convert(args) == 0  # nothing left to do
    assert stored_keys(out) == ["a0", "a1", "b2", "b3", "c3", "c3"]


def test_interrupted_conversion_loses_and_repeats_nothing(scene_root, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    opened = []

    def crash_on_third(path, **kwargs):
        opened.append(path)
        if len(opened) == 3:
            raise KeyboardInterrupt  # killed while writing the second shard
        return read_dl3dv(path, **kwargs)

    monkeypatch.setattr("data.dl3dv.convert.read_dl3dv", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        convert(["--src", str(scene_root), "--out", str(out), "--shard-size", "2"])
    monkeypatch.undo()
    assert stored_keys(out) == ["a1", "b2"]
    assert convert(["--src", str(scene_root), "--out", str(out), "--shard-size", "1"]) == 0
    assert stored_keys(out) == ["a1", "b2", "c3"] and not list(out.glob("*.partial"))


@pytest.fixture(scope="module")
def eight_shards(scene_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards8")
    base = read_dl3dv(scene_root / "a1")
    write_shards([dataclasses.replace(base, scene_id=f"s{i}") for i in range(8)], out, shard_size=1, progress=False)
    return out


def test_two_nodes_two_workers_see_disjoint_shards(eight_shards, monkeypatch):
    parts, seen = {}, {}
    for rank in range(2):
        for worker in range(2):
            for key, value in dict(RANK=rank, WORLD_SIZE=2, WORKER=worker, NUM_WORKERS=2).items():
                monkeypatch.setenv(key, str(value))
            ds = ShardDataset(eight_shards, CONFIG, seed=3, epoch_samples=6)
            parts[rank, worker] = {u.rsplit("-", 1)[1] for u in (d["url"] for d in ds.worker_shards())}
            seen[rank, worker] = {s.scene_id for s in ds}
    assert sorted(p for part in parts.values() for p in part) == [f"{i:06d}.tar" for i in range(8)]
    for key, ids in seen.items():
        assert ids <= {f"s{int(p[:6])}" for p in parts[key]}  # resampled, but only from its own part
    assert all(not (seen[a] & seen[b]) for a in seen for b in seen if a != b)


def test_dataloader_workers_split_within_a_node(eight_shards, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = ShardDataset(eight_shards, CONFIG, seed=0, epoch_samples=3)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2 and all(b.input_images.shape == (3, 4, 16, 16, 3) for b in batches)
    ids = [set(b.scene_ids) for b in batches]  # batches come from one worker each
    assert all(i <= {"s1", "s3", "s5", "s7"} for i in ids) and not (ids[0] & ids[1])


def rewrite(src, dst, change):
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = change(m.name, tin.extractfile(m).read())
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_corrupt_samples_are_skipped_and_counted(eight_shards, tmp_path):
    shards = sorted(eight_shards.glob("*.tar"))
    rewrite(shards[0], tmp_path / "shard-0.tar", lambda n, d: b"{oops" if n.endswith("cameras.json") else d)
    rewrite(shards[1], tmp_path / "shard-1.tar", lambda n, d: d[:8] + b"\0" * (len(d) - 8) if n.endswith(".png") else d)
    rewrite(shards[2], tmp_path / "shard-2.tar", lambda n, d: d)  # intact
    whole = (shards[3]).read_bytes()
    (tmp_path / "shard-3.tar").write_bytes(whole[: len(whole) // 2])  # truncated mid-sample
    ds = ShardDataset(sorted(str(p) for p in tmp_path.glob("*.tar")), CONFIG, resampled=False, shuffle_buffer=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [s.scene_id for s in ds]
    assert got == ["s2"]
    assert ds.skipped == 3  # s0 (cameras), s1 (frames), s3 (the part before the truncation)
    assert ds.read_errors >= 1  # the truncation itself
    ours = [str(w.message) for w in caught if str(w.message).startswith("skipping")]
    assert len(ours) == ds.skipped + ds.read_errors
    assert any("s0" in m and "cameras.json" in m for m in ours) and any("s1" in m and "frame_" in m for m in ours)
    assert any("s3" in m and "truncated" in m for m in ours)
