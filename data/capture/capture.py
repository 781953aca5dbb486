"""From photos or a video without poses to a COLMAP scene under the output folder.

    capture_scene(source, out_dir, config) -> Capture

writes out_dir/images/ (the frames), out_dir/sparse/0, 1, ... (COLMAP models, largest first),
out_dir/database.db (COLMAP's features and matches), capture.log (everything COLMAP printed) and
capture.json (which frames were kept, which registered, the time of each step). Work happens in
out_dir/.capture-partial and is moved into place only once the poses are good enough, so a failed
capture leaves nothing behind; the source is only read. Opening out_dir later as a scene reuses
the poses.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import SceneError
from .config import CaptureConfig
from .frames import Frames, extract_frames
from .photos import PHOTO_SUFFIXES, Photos, list_photos
from .sfm import Poses, solve_poses
from .video import Video

log = logging.getLogger("capture")
log.setLevel(logging.INFO)  # the capture log file gets the summary even when the console is quieter

CAPTURE_KINDS = ("photos", "video")
PARTIAL = ".capture-partial"
OUTPUTS = ("images", "sparse", "database.db", "capture.log", "capture.json")  # what a capture adds to out_dir
_SHOWN = 10  # unregistered frames named on the console (capture.json lists all)


@dataclass
class Capture:
    kind: str  # one of CAPTURE_KINDS
    frames: Frames
    poses: Poses

    @property
    def seconds(self) -> dict[str, float]:
        return {**self.frames.seconds, **self.poses.seconds}


def capture_kind(path: Path) -> str | None:
    """"photos" for a folder with photos directly inside, "video" for any other file that is not a JSON
    camera file or a single image; None otherwise. Reads no pixels (a bad video fails when decoded)."""
    path = Path(path)
    if path.is_dir():
        return "photos" if list_photos(path) else None
    if path.is_file() and path.suffix.lower() not in (".json", *PHOTO_SUFFIXES):
        return "video"
    return None


def capture_scene(source: Path, out_dir: Path, config: CaptureConfig | None = None) -> Capture:
    config = config or CaptureConfig()
    source, out_dir = Path(source), Path(out_dir)
    kind = capture_kind(source)
    if kind is None:
        raise SceneError(f"{source} is neither a video nor a folder of photos ({', '.join(PHOTO_SUFFIXES)})")
    if kind == "photos" and out_dir.resolve().is_relative_to(source.resolve()):
        raise SceneError(f"the output folder {out_dir} is inside the photo folder {source}; choose an --out "
                         "outside it (the photos are only read)")
    taken = [name for name in ("images", "sparse") if (out_dir / name).exists()]
    if taken:
        raise SceneError(f"{out_dir} already holds {' and '.join(f'{t}/' for t in taken)}; pass it as --views to "
                         "reuse its poses, or choose an empty --out for a new capture")
    reader = Video(source) if kind == "video" else Photos(source)
    work = out_dir / PARTIAL
    shutil.rmtree(work, ignore_errors=True)  # left by an interrupted capture; the name is ours
    (work / "images").mkdir(parents=True)
    handler = logging.FileHandler(work / "capture.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    try:
        log.info("capture: %s (%s), %s frames at most, longest side %d px", source, kind, config.max_frames,
                 config.frame_size)
        frames = extract_frames(reader, work / "images", config)
        _say_frames(kind, frames)
        poses = solve_poses(work / "images", frames.names, work, kind == "video", config, work / "capture.log")
        capture = Capture(kind, frames, poses)
        _check_registered(capture, source, config)
        _say_poses(capture)
        (work / "capture.json").write_text(json.dumps(_report(capture, source, config), indent=2))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
    for name in OUTPUTS:  # the rest of work/ (pair list, retrieval tree) is scratch
        if (work / name).exists():
            (work / name).replace(out_dir / name)
    shutil.rmtree(work)
    return capture


def _say_frames(kind: str, frames: Frames) -> None:
    what = "video frames" if kind == "video" else "photos"
    kept = len(frames.names)
    how = "all" if kept == frames.total else f"the sharpest of each {frames.total / kept:.1f}"
    log.info("frames: kept %d of %d %s (%s) at %dx%d, %s to %s", kept, frames.total, what, how, frames.width,
             frames.height, frames.origins[0], frames.origins[-1])


def _check_registered(capture: Capture, source: Path, config: CaptureConfig) -> None:
    n, registered = len(capture.frames.names), len(capture.poses.registered)
    needed = max(config.min_registered, math.ceil(config.min_registered_share * n))
    if registered >= needed:
        return
    models = capture.poses.models
    found = (f"the largest of {len(models)} models registers {registered} of {n} frames" if models else
             f"none of the {n} frames could be registered")
    if capture.poses.implausible:
        found += f" ({len(capture.poses.implausible)} more with an implausible camera left out)"
    raise SceneError(f"camera poses failed for {source}: {found}, at least {needed} are needed. The frames must "
                     "overlap: move the camera slower, keep most of the scene in view from frame to frame, give "
                     "more frames (--max-frames), avoid blur, reflections and plain walls, light the scene evenly")


def _say_poses(capture: Capture) -> None:
    poses, n = capture.poses, len(capture.frames.names)
    loops = f", {poses.loop_pairs} found by retrieval" if poses.loop_pairs else ""
    others = f"; other models: {', '.join(map(str, poses.models[1:]))} frames" if len(poses.models) > 1 else ""
    log.info("poses: %d of %d frames registered in sparse/0 (%d pairs matched%s), %d points, mean reprojection "
             "error %.2f px%s", len(poses.registered), n, poses.num_pairs, loops, poses.points,
             poses.reprojection_error, others)
    if poses.implausible:
        log.warning("left out: %s with an implausible camera (focal length or distortion out of COLMAP's bounds)",
                    ", ".join(f"a model of {k} frames" for k in poses.implausible))
    missing = sorted(set(capture.frames.names) - set(poses.registered))
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else "")
        log.warning("not registered (left out of the scene): %s", shown)
    log.info("capture seconds: %s", ", ".join(f"{k} {v:.1f}" for k, v in capture.seconds.items()))


def _report(capture: Capture, source: Path, config: CaptureConfig) -> dict:
    frames, registered = capture.frames, set(capture.poses.registered)
    return {
        "source": str(source), "kind": capture.kind, "config": asdict(config),
        "width": frames.width, "height": frames.height, "source_frames": frames.total,
        "frames": [{"name": name, "from": origin, "sharpness": score, "registered": name in registered}
                   for name, origin, score in zip(frames.names, frames.origins, frames.sharpness)],
        "models": capture.poses.models, "implausible_models": capture.poses.implausible,
        "points": capture.poses.points, "reprojection_error": capture.poses.reprojection_error,
        "pairs": capture.poses.num_pairs, "loop_pairs": capture.poses.loop_pairs,
        "seconds": capture.seconds,
    }
