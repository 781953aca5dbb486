"""Which frames become input and target views: the training sampler and the evaluation protocol.

Training (official semantics): a window of consecutive frames whose first and last frame are
`frame_dist` apart, frame_dist ~ U{min_frame_dist .. max_frame_dist} (clipped to the video; None =
the whole video); N inputs at `linspace(0, len - 1, N)` over the window; M targets drawn without
replacement from the window (they may coincide with inputs); then, with two independent draws
(shuffle drawn first, as in the official code), the sorted inputs are reversed with p = reverse_prob
and shuffled with p = shuffle_prob (a shuffle makes the reversal irrelevant).

Evaluation (DL3DV-140 protocol): targets are frames range(0, N, every); inputs are K frames of the
rest, chosen by KMeans (scikit-learn, random_state=0, n_init="auto", unscaled 6-D features
[camera centre, forward axis]) as the frame nearest to each centroid. Where two centroids share a
nearest frame, the later one takes its nearest frame not yet chosen, so exactly K distinct frames
come back (the official code would return a duplicate; its published DL3DV-140 lists have none).
Selections are cached as small JSON files under a user cache directory, keyed by a hash of the
camera data — never inside the scene folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from .errors import SceneError

_CACHE_VERSION = 1  # bump when the selection algorithm changes so old cache entries are ignored


@dataclass(frozen=True)
class Selection:
    inputs: list[int]  # [V] frame indices, in the order the network sees them
    targets: list[int]  # [T] frame indices, sorted


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
    chosen: list[int] = []
    for center in centers:
        order = np.argsort(np.linalg.norm(features - center, axis=1), kind="stable")
        chosen.append(int(next(candidates[j] for j in order if candidates[j] not in chosen)))
    return sorted(chosen)


def default_cache_dir() -> Path:
    """$LONGLRM_SPLAT_CACHE, else $XDG_CACHE_HOME/longlrm-splat, else ~/.cache/longlrm-splat."""
    if os.environ.get("LONGLRM_SPLAT_CACHE"):
        return Path(os.environ["LONGLRM_SPLAT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "longlrm-splat"


def select_eval_views(c2w: Tensor | np.ndarray, num_inputs: int, every: int | None = 8, scene_id: str = "",
                      cache_dir: str | Path | None = None, precomputed: dict | None = None) -> Selection:
    """The evaluation split of one scene: KMeans inputs and every-`every`th targets.

    precomputed: {"every/K": indices} read from the scene (the official files can carry them); used
    as is when present. cache_dir: where selections are cached (default `default_cache_dir()`);
    pass False to disable caching.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    targets = eval_targets(len(c2w), every)
    if precomputed and f"{every}/{num_inputs}" in precomputed:
        return Selection(sorted(precomputed[f"{every}/{num_inputs}"]), targets)
    if cache_dir is False:
        return Selection(kmeans_inputs(c2w, num_inputs, every, scene_id), targets)
    key = hashlib.sha256(np.ascontiguousarray(c2w[:, :3, :]).tobytes()
                         + f"{num_inputs}/{every}/v{_CACHE_VERSION}".encode()).hexdigest()[:32]
    path = Path(cache_dir or default_cache_dir()) / "eval_views" / f"{key}.json"
    try:
        return Selection(json.loads(path.read_text())["inputs"], targets)
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
    return Selection(inputs, targets)
