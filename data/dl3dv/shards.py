"""Webdataset shards of scenes: one scene per sample, frames as their original encoded bytes.

A sample (tar members sharing the key, which is the scene id with dots replaced):
    <key>.cameras.json   {"format", "version", "scene_id", "width", "height", "upright", "extras",
                          "frames": [{"name", "member", "c2w" (OpenCV 4x4), "fx", "fy", "cx", "cy",
                                      "k1", "k2", "p1", "p2"}]}   intrinsics/distortion of the stored bytes
    <key>.00000.png      frame 0, bytes copied from the source file (never re-encoded)
    <key>.00001.png      ...
webdataset splits member names at the first dot, so keys carry no dots and each frame's sample key
is "00000.png". Shards are written as `shard-000000.tar.partial`, then renamed: a `.tar` file is
always complete. A `shard-000000.json` beside each shard, written before that rename, lists the
scenes it holds and those that failed to open (reported and left out), each by its identity: its
folder relative to the conversion's root (or a Scene's id). A rerun goes by those identities, never
by shard numbers: scenes recorded in a complete shard are skipped, every other scene (new ones, or
those of an interrupted shard) goes into new shards numbered after the last one. No scene is lost or
stored twice, whatever was added between runs. `index.json` sums the shards up.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SceneError
from ..files import natural_key
from ..images import ImageSize
from ..scene import Scene

FORMAT = "longlrm-splat/scene"
VERSION = 1
CAMERAS = "cameras.json"


def sample_key(scene_id: str) -> str:
    """A webdataset key: no dots (they split keys) and no path separators."""
    return re.sub(r"[./\\\s]", "_", scene_id)


def _frame_bytes(scene: Scene, i: int) -> tuple[bytes, str]:
    source = scene.sources[i]
    if isinstance(source, Path):
        return source.read_bytes(), source.suffix.lower().lstrip(".") or "png"
    if isinstance(source, bytes):
        return source, Path(scene.names[i]).suffix.lower().lstrip(".") or "png"
    pixels = source if source.dtype == np.uint8 else np.rint(np.clip(source, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # in-memory scenes have no encoded form yet
    return buffer.getvalue(), "png"


def scene_to_sample(scene: Scene) -> dict:
    """The webdataset sample dict {"__key__", "cameras.json", "00000.png", ...} of a scene."""
    intrinsics = scene.raw_intrinsics if scene.raw_intrinsics is not None else scene.intrinsics  # stored images
    coeffs = scene.distortion if scene.distortion is not None else np.zeros((len(scene), 4))
    sample, frames = {"__key__": sample_key(scene.scene_id)}, []
    for i in range(len(scene)):
        data, ext = _frame_bytes(scene, i)
        member = f"{i:05d}.{ext}"
        sample[member] = data
        fx, fy, cx, cy = (float(v) for v in intrinsics[i])
        k1, k2, p1, p2 = (float(v) for v in coeffs[i])
        frames.append({"name": scene.names[i], "member": member, "c2w": scene.c2w[i].tolist(),
                       "fx": fx, "fy": fy, "cx": cx, "cy": cy, "k1": k1, "k2": k2, "p1": p1, "p2": p2})
    record = {"format": FORMAT, "version": VERSION, "scene_id": scene.scene_id, "width": scene.width,
              "height": scene.height, "upright": scene.upright, "extras": scene.extras, "frames": frames}
    sample[CAMERAS] = json.dumps(record).encode()
    return sample


def scene_from_sample(sample: dict, distortion: str = "undistort") -> Scene:
    """Rebuild the Scene of a shard sample; frames stay encoded bytes until `load_views`."""
    where = f"shard sample {sample.get('__key__', '?')} from {sample.get('__url__', '?')}"
    if CAMERAS not in sample:
        raise SceneError(f"{where} has no {CAMERAS} member; the shard is truncated or not a scene shard")
    try:
        record = json.loads(sample[CAMERAS])
        if record.get("format") != FORMAT or record.get("version") != VERSION:
            found = f"{record.get('format')} v{record.get('version')}"
            raise SceneError(f"{where} is {found}, expected {FORMAT} v{VERSION}; rewrite the shards with this version")
        frames = record["frames"]
        missing = [f["member"] for f in frames if f["member"] not in sample]
        if missing:
            raise SceneError(f"{where} lacks frame member {missing[0]} ({len(missing)} missing); "
                             "the shard is truncated")
        return Scene.from_frames(
            record["scene_id"], [f["name"] for f in frames], [sample[f["member"]] for f in frames],
            [f["c2w"] for f in frames], [[f["fx"], f["fy"], f["cx"], f["cy"]] for f in frames],
            distortion=[[f["k1"], f["k2"], f["p1"], f["p2"]] for f in frames], on_distortion=distortion,
            camera_file=where, extras=record.get("extras", {}), size=ImageSize(height=int(record["height"]), width=int(record["width"])),
            upright=bool(record.get("upright", True)),
        )
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, SceneError):
            raise
        raise SceneError(f"{where} has a malformed {CAMERAS} ({type(e).__name__}: {e}); rewrite this shard") from None


def _write_tar(path: Path, samples) -> None:
    """Members in sample order, cameras first so a reader meets them before the frames."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample["__key__"]
            names = [CAMERAS] + sorted((k for k in sample if k not in ("__key__", CAMERAS)), key=natural_key)
            for name in names:
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(sample[name])
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(sample[name]))


def write_shards(scenes: list, out_dir: str | Path, shard_size: int = 8, open_fn=None, progress: bool = True,
                 root: str | Path | None = None) -> dict:
    """Write scenes (folders, or ready Scene objects) into `out_dir/shard-NNNNNN.tar`; returns the index.

    open_fn(path) -> Scene opens a folder (default: `open_scene`). root: the folder scene folders are
    identified relative to (default: their full path). Scenes already in a complete shard are kept.
    """
    from tqdm import tqdm

    from ..open_scene import open_scene

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    open_fn = open_fn or open_scene
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = _complete_shards(out)  # {shard number: identities of the scenes it records}
    recorded = {identity for identities in done.values() for identity in identities}
    todo = sorted(((_identity(s, root), s) for s in scenes), key=lambda pair: natural_key(pair[0]))
    todo = [(identity, scene) for identity, scene in todo if identity not in recorded]
    chunks = [todo[i:i + shard_size] for i in range(0, len(todo), shard_size)]
    bar = tqdm(total=len(todo), desc="scenes", unit="scene", disable=not progress)
    for n, chunk in enumerate(chunks, start=max(done, default=-1) + 1):
        tar_path, info_path = out / f"shard-{n:06d}.tar", out / f"shard-{n:06d}.json"
        entries, failed = [], []
        partial = tar_path.with_name(tar_path.name + ".partial")
        _write_tar(partial, _open_samples(chunk, open_fn, entries, failed, bar))
        info_path.write_text(json.dumps({"shard": tar_path.name, "samples": entries, "failed": failed}, indent=1))
        os.replace(partial, tar_path)  # the rename marks the shard complete
    bar.close()
    return _write_index(out, len(done))


def _identity(scene, root: str | Path | None) -> str:
    """What a rerun recognises a scene by: a Scene's id, a folder's path relative to `root`."""
    if isinstance(scene, Scene):
        return scene.scene_id
    path = Path(scene)
    return path.relative_to(root).as_posix() if root is not None else path.as_posix()


def _complete_shards(out: Path) -> dict[int, list[str]]:
    """The identities each complete shard in `out` records; debris of an interrupted shard is removed
    (its scenes are in no complete shard, so they are written again)."""
    for debris in out.glob("shard-*.tar.partial"):
        debris.unlink()
    done = {}
    for info in sorted(out.glob("shard-*.json")):
        if not info.with_suffix(".tar").is_file():  # written, but its tar was never renamed into place
            info.unlink()
            continue
        try:
            record = json.loads(info.read_text())
            done[int(info.stem.split("-")[1])] = ([e["source"] for e in record["samples"]]
                                                  + [f["scene"] for f in record["failed"]])
        except (ValueError, KeyError, TypeError, IndexError):
            raise ValueError(f"{info} does not record which scenes its shard holds (written by an older version, "
                             "or damaged); convert into an empty --out") from None
    return done


def _open_samples(chunk: list, open_fn, entries: list, failed: list, bar):
    """Samples of the (identity, scene) pairs in `chunk`, recording each in `entries` or, if it cannot
    be opened, `failed`."""
    for identity, item in chunk:
        try:
            sample = scene_to_sample(item if isinstance(item, Scene) else open_fn(item))
        except (SceneError, OSError) as e:
            failed.append({"scene": identity, "error": str(e)})
            warnings.warn(f"leaving out {item}: {e}", stacklevel=2)
            continue
        finally:
            bar.update(1)
        entries.append({"source": identity, "key": sample["__key__"], "frames": len(sample) - 2,
                        "bytes": sum(len(v) for k, v in sample.items() if k != "__key__")})
        yield sample


def _write_index(out: Path, resumed: int) -> dict:
    shards = [json.loads(p.read_text()) for p in sorted(out.glob("shard-*.json"))]
    index = {
        "format": FORMAT, "version": VERSION,
        "shards": [s["shard"] for s in shards],
        "num_samples": sum(len(s["samples"]) for s in shards),
        "failed": [f for s in shards for f in s["failed"]],
        "resumed_shards": resumed,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index
