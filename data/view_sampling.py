"""Which frames become input and target views: the training sampler and the evaluation protocol.

Training (official semantics): a window of consecutive frames whose first and last frame are
`frame_dist` apart, frame_dist ~ U{min_frame_dist .. max_frame_dist} (clipped to the video; None =
the whole video); N inputs at `linspace(0, len - 1, N)` over the window; M targets drawn without
replacement from the window (they may coincide with inputs); then, with two independent draws
(shuffle drawn first, as in the official code), the sorted inputs are reversed with p = reverse_prob
and shuffled with p = shuffle_prob (a shuffle makes the reversal irrelevant).

Evaluation (DL3DV-140 protocol): targets are frames range(0, N, every); inputs are K frames of the
rest. The authors stored their choice in their scene files (`fold_8_kmeans_32_input`, and in their
DL3DV-140 index file `fold_8_kmeans_16_input` too): a stored list for K inputs is used whenever
there is one. Otherwise KMeans (scikit-learn, random_state=0, n_init="auto", unscaled 6-D features
[camera centre, forward axis]) picks the frame nearest to each centroid. Distances equal to within
TIE_TOLERANCE count as a tie, won by the lowest frame index as numpy's argmin does for exact ties:
the same cameras inverted another way (1e-15 apart) must not change the choice. Where two centroids
share a nearest frame, the later one takes its nearest frame not yet chosen, so exactly K distinct
frames come back (the official code would return a duplicate; its published lists have none).
KMeans selections are cached as small JSON files under a user cache directory, keyed by a hash of
the camera data — never inside the scene folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from .errors import SceneError

log = logging.getLogger("data")

_CACHE_VERSION = 2  # bump when the selection algorithm changes so old cache entries are ignored
TIE_TOLERANCE = 1e-9  # relative to the feature scale
MIN_VIEWS = 2  # the pose normalisation and any reconstruction need at least two viewpoints
_STORED_KEY = re.compile(r"^fold_(\d+)_kmeans_(\d+)_input$")


@dataclass(frozen=True)
class Selection:
    inputs: list[int]  # [V] frame indices, in the order the network sees them
    targets: list[int]  # [T] frame indices, sorted
    source: str = "window"  # how the inputs were chosen: "window" (training), "stored", "kmeans" or "all"


def sample_train_views(num_frames: int, num_inputs: int, num_targets: int, rng: np.random.Generator,
                       min_frame_dist: int | None = 64, max_frame_dist: int | None = 128,
                       reverse_prob: float = 0.5, shuffle_prob: float = 0.5, scene_id: str = "") -> Selection:
    """One training draw from a video of `num_frames` frames (deterministic for a seeded rng)."""
    needed = max(num_inputs, num_targets)
    if num_frames < needed:
        raise SceneError(f"scene {scene_id} has {num_frames} frames, fewer than the {needed} distinct views "
                         f"requested ({num_inputs} inputs, {num_targets} targets); use fewer views or a longer video")
    last = num_frames - 1
    lo = last if min_frame_dist is None else min(min_frame_dist, last)
    hi = last if max_frame_dist is None else min(max_frame_dist, last)
    # A video shorter than the minimum window is used whole; the window must hold `needed` frames.
    lo = max(lo, needed - 1)
    hi = max(hi, lo)
    frame_dist = int(rng.integers(lo, hi + 1))
    shuffle = rng.random() < shuffle_prob
    reverse = rng.random() < reverse_prob
    start = int(rng.integers(0, num_frames - frame_dist))
    window = np.arange(start, start + frame_dist + 1)
    targets = sorted(int(i) for i in rng.choice(window, num_targets, replace=False))
    inputs = [int(window[i]) for i in np.linspace(0, len(window) - 1, num_inputs).astype(int)]
    if reverse:
        inputs = inputs[::-1]
    if shuffle:
        rng.shuffle(inputs)
    return Selection(inputs, targets)


def eval_targets(num_frames: int, every: int | None = 8) -> list[int]:
    """Held-out target frames 0, every, 2 * every, ...; none when every is None."""
    return [] if every is None else list(range(0, num_frames, every))


def kmeans_inputs(c2w: Tensor | np.ndarray, num_inputs: int, every: int | None = 8, scene_id: str = "") -> list[int]:
    """K input frames (sorted) from the non-target frames of c2w [N, 4, 4] by KMeans on [centre, forward].

    every=None holds no frame out (inference on all frames of a capture).
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    c2w = np.asarray(c2w, dtype=np.float64)
    targets = set(eval_targets(len(c2w), every))
    candidates = np.array([i for i in range(len(c2w)) if i not in targets])
    if len(candidates) < num_inputs:
        held_out = f"after holding out every {every}th frame as a target " if every is not None else ""
        raise SceneError(f"scene {scene_id} has {len(c2w)} frames: {held_out}only {len(candidates)} remain, "
                         f"fewer than the {num_inputs} inputs requested")
    features = np.concatenate([c2w[candidates, :3, 3], c2w[candidates, :3, 2]], 1)  # [C, 6]
    with warnings.catch_warnings():
        # Fewer distinct cameras than clusters (a camera at rest) is handled below by taking unchosen frames.
        warnings.simplefilter("ignore", ConvergenceWarning)
        centers = KMeans(n_clusters=num_inputs, random_state=0, n_init="auto").fit(features).cluster_centers_
    tolerance = TIE_TOLERANCE * max(1.0, float(np.abs(features).max()))
    chosen: list[int] = []
    for center in centers:
        dist = np.linalg.norm(features - center, axis=1)
        dist[np.isin(candidates, chosen)] = np.inf
        chosen.append(int(candidates[np.flatnonzero(dist <= dist.min() + tolerance)[0]]))
    return sorted(chosen)


def default_cache_dir() -> Path:
    """$LONGLRM_SPLAT_CACHE, else $XDG_CACHE_HOME/longlrm-splat, else ~/.cache/longlrm-splat."""
    if os.environ.get("LONGLRM_SPLAT_CACHE"):
        return Path(os.environ["LONGLRM_SPLAT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "longlrm-splat"


def stored_lists(mapping: dict) -> dict[str, list[int]]:
    """{"every/K": frame indices} from the authors' `fold_{every}_kmeans_{K}_input` keys of a scene
    file or of one entry of their index file."""
    lists = {}
    for key, value in mapping.items():
        match = _STORED_KEY.match(key)
        if match:
            lists[f"{match[1]}/{match[2]}"] = [int(i) for i in value]
    return lists


def stored_inputs(lists: dict | None, num_inputs: int, every: int | None) -> list[int] | None:
    """The stored list for `num_inputs` inputs: the one for this fold; with no fold (nothing held out)
    the one for any fold, since the authors' inputs are good inputs either way."""
    if not lists:
        return None
    if every is not None:
        return lists.get(f"{every}/{num_inputs}")
    return next((v for k, v in sorted(lists.items()) if k.endswith(f"/{num_inputs}")), None)


def read_input_index(path: str | Path) -> dict[str, dict[str, list[int]]]:
    """The authors' DL3DV-140 selection file (`data/dl3dv_fold_8_kmeans_input_idx.json` in their
    repository): [{"scene_name": hash, "fold_8_kmeans_16_input": [...], "fold_8_kmeans_32_input": [...]},
    ...] -> {scene name: {"8/16": [...], "8/32": [...]}}. Indices count frames in the camera file's order."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"input index {path} cannot be read ({err.strerror}); pass the authors' "
                         "dl3dv_fold_8_kmeans_input_idx.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"input index {path} is not valid JSON ({err}); re-download it") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "scene_name" in e for e in entries):
        raise ValueError(f"input index {path} must be a JSON list of objects with a 'scene_name' and "
                         "'fold_8_kmeans_<K>_input' lists, like the authors' dl3dv_fold_8_kmeans_input_idx.json")
    try:
        return {str(e["scene_name"]): stored_lists(e) for e in entries}
    except (TypeError, ValueError):
        raise ValueError(f"input index {path} holds a frame list that is not a list of integers") from None


def to_scene_order(lists: dict[str, list[int]], file_index: list[int] | None) -> dict[str, list[int]]:
    """Lists counting frames in camera-file order -> scene frame indices. file_index[i] is the file
    position of scene frame i (readers that reorder frames record it); None: the same order."""
    if file_index is None:
        return lists
    scene_index = {int(f): i for i, f in enumerate(file_index)}
    try:
        return {key: [scene_index[f] for f in frames] for key, frames in lists.items()}
    except KeyError as err:
        raise SceneError(f"stored input frame {err} is not a frame of the camera file") from None


def select_eval_views(c2w: Tensor | np.ndarray, num_inputs: int, every: int | None = 8, scene_id: str = "",
                      cache_dir: str | Path | None = None, precomputed: dict | None = None) -> Selection:
    """The evaluation split of one scene: stored or KMeans inputs and every-`every`th targets.

    precomputed: {"every/K": indices} stored with the scene (see `stored_inputs`); used when it has a
    list for num_inputs. cache_dir: where KMeans selections are cached (default `default_cache_dir()`);
    pass False to disable caching.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    targets = eval_targets(len(c2w), every)
    stored = stored_inputs(precomputed, num_inputs, every)
    if stored is not None:
        bad = sorted({i for i in stored if not 0 <= i < len(c2w)} | set(stored) & set(targets))
        if bad or len(set(stored)) != len(stored):
            raise SceneError(f"scene {scene_id}: its stored list of {num_inputs} input frames {stored} repeats frames "
                             f"or names frames that are held out or do not exist ({bad}); fix or remove the list")
        return Selection(sorted(stored), targets, "stored")
    if cache_dir is False:
        return Selection(kmeans_inputs(c2w, num_inputs, every, scene_id), targets, "kmeans")
    key = hashlib.sha256(np.ascontiguousarray(c2w[:, :3, :]).tobytes()
                         + f"{num_inputs}/{every}/v{_CACHE_VERSION}".encode()).hexdigest()[:32]
    path = Path(cache_dir or default_cache_dir()) / "eval_views" / f"{key}.json"
    try:
        return Selection(json.loads(path.read_text())["inputs"], targets, "kmeans")
    except (OSError, ValueError, KeyError):
        pass  # not cached yet, or an unreadable entry: recompute and rewrite
    inputs = kmeans_inputs(c2w, num_inputs, every, scene_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"scene_id": scene_id, "num_inputs": num_inputs, "every": every, "inputs": inputs}))
        os.replace(tmp, path)  # atomic, so concurrent workers never read half a file
    except OSError:
        pass  # a read-only home must not stop evaluation; the selection is simply recomputed next time
    return Selection(inputs, targets, "kmeans")


def select_views(scene, num_inputs: int, every: int | None = 8, cache_dir: str | Path | None = None) -> Selection:
    """The views of a whole capture for one forward pass (inference, evaluation, refinement).

    every: hold out frames 0, every, 2 * every, ... as targets; None holds out nothing and, when all
    frames are asked for, uses them all. Fewer usable frames than `num_inputs`: all of them, with a
    warning, down to MIN_VIEWS. Inputs: the scene's stored list when it has one, else KMeans.
    """
    n = len(scene)
    targets = eval_targets(n, every)
    available = n - len(targets)
    if available < MIN_VIEWS:
        held = f" after holding out every {every}th frame" if every is not None else ""
        raise SceneError(f"scene {scene.scene_id} has {n} frames, leaving {available} input views{held}; "
                         f"at least {MIN_VIEWS} are needed")
    if available < num_inputs:
        log.warning("scene %s has only %d usable input frames, fewer than the %d requested: using all of them",
                    scene.scene_id, available, num_inputs)
        num_inputs = available
    if every is None and num_inputs == n:
        return Selection(list(range(n)), [], "all")
    selection = select_eval_views(scene.c2w, num_inputs, every, scene.scene_id, cache_dir,
                                  scene.extras.get("eval_inputs"))
    how = ("the list stored with the scene" if selection.source == "stored"
           else "KMeans on camera positions and viewing directions")
    log.info("%d input frames chosen by %s", num_inputs, how)
    return selection
