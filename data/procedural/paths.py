"""Smooth camera paths through a room, like the hand-held videos of DL3DV.

- walk: a spline through random waypoints at constant speed, the camera looking around the room;
- forward: forward-facing frames with a small lateral and vertical sway (LLFF-like);
- orbit: a circle around the room centre, looking at the centre.
Positions keep `clearance` from walls, floor and ceiling; objects are placed afterwards away from them.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from .cameras import c2w_from_forward

_DENSE = 4096  # samples of the dense walk and look-target curves
_MIN_LOOK_DISTANCE = 1.8  # metres (horizontal) between a walking camera and the point it looks at


def camera_path(rng: np.random.Generator, kind: str, lo: np.ndarray, hi: np.ndarray, num_frames: int,
                clearance: float) -> Tensor:
    """Camera-to-world matrices [num_frames, 4, 4] (OpenCV axes) inside room [lo, hi]."""
    builders = {"walk": _walk, "forward": _forward, "orbit": _orbit}
    if kind not in builders:
        raise ValueError(f"unknown camera path kind {kind!r}; expected one of {sorted(builders)}")
    positions, forward, roll = builders[kind](rng, lo, hi, num_frames, clearance)
    positions = np.clip(positions, lo + clearance, hi - clearance)
    return c2w_from_forward(positions, forward, roll)


def _eye_height(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, clearance: float) -> float:
    return float(np.clip(rng.uniform(1.2, 1.8), lo[1] + clearance, hi[1] - clearance - 0.3))


def _wave(rng: np.random.Generator, s: np.ndarray, amplitude: float, cycles: tuple[float, float]) -> np.ndarray:
    """A random low-frequency sinusoid of the path fraction s in [0, 1]."""
    return amplitude * np.sin(2 * np.pi * rng.uniform(*cycles) * s + rng.uniform(0, 2 * np.pi))


def _catmull_rom(points: np.ndarray, samples: int) -> np.ndarray:
    """Dense points [samples, D] on the centripetal Catmull-Rom spline through points [K, D], K >= 2.

    The centripetal form never makes cusps or self-loops between unevenly spaced waypoints.
    """
    padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    u = np.linspace(0, len(points) - 1, samples)
    seg = np.minimum(u.astype(int), len(points) - 2)
    p0, p1, p2, p3 = padded[seg], padded[seg + 1], padded[seg + 2], padded[seg + 3]  # [samples, D] each

    def knot_step(a, b):
        return np.maximum(np.linalg.norm(b - a, axis=-1, keepdims=True) ** 0.5, 1e-6)

    t0 = np.zeros((samples, 1))
    t1 = t0 + knot_step(p0, p1)
    t2 = t1 + knot_step(p1, p2)
    t3 = t2 + knot_step(p2, p3)
    t = t1 + (u - seg)[:, None] * (t2 - t1)

    def lerp(a, b, ta, tb):
        return ((tb - t) * a + (t - ta) * b) / (tb - ta)

    a1, a2, a3 = lerp(p0, p1, t0, t1), lerp(p1, p2, t1, t2), lerp(p2, p3, t2, t3)
    return lerp(lerp(a1, a2, t0, t2), lerp(a2, a3, t1, t3), t1, t2)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of x [N] (sigma in samples), edges padded with the end values."""
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return np.convolve(np.pad(x, radius, mode="edge"), kernel / kernel.sum(), mode="valid")


def _by_arc_length(curve: np.ndarray) -> np.ndarray:
    """The same polyline [N, D] resampled at N points evenly spaced along its length."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=-1))])
    even = np.linspace(0, arc[-1], len(curve))
    return np.stack([np.interp(even, arc, curve[:, d]) for d in range(curve.shape[1])], -1)


def _walk(rng, lo, hi, num_frames, clearance):
    """The camera follows one spline at constant speed while looking towards a point that wanders along
    a second spline through the room, kept at a distance so the views see across the room."""
    best, best_gap = None, -1.0
    for _ in range(30):
        walk, look = _walk_candidate(rng, lo, hi, num_frames, clearance)
        gap = np.linalg.norm((look - walk)[:, [0, 2]], axis=-1).min()
        if gap > best_gap:
            best, best_gap = (walk, look), gap
        if gap >= _MIN_LOOK_DISTANCE:
            break
    walk, look = best
    # Viewing angles are smoothed over 3% of the walk so the camera turns gently whatever the target does.
    view = look - walk
    yaw = _smooth(np.unwrap(np.arctan2(view[:, 0], view[:, 2])), 0.03 * _DENSE)
    pitch = _smooth(np.arctan2(view[:, 1], np.linalg.norm(view[:, [0, 2]], axis=-1)), 0.03 * _DENSE)
    s = np.linspace(0, 1, num_frames)
    grid = np.linspace(0, 1, _DENSE)
    positions = np.stack([np.interp(s, grid, walk[:, d]) for d in range(3)], -1)  # [V, 3]
    yaw, pitch = np.interp(s, grid, yaw), np.interp(s, grid, pitch)
    forward = np.stack([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)], -1)
    return positions, forward, _wave(rng, s, 0.03, (0.5, 1.5))


def _walk_candidate(rng, lo, hi, num_frames, clearance):
    """Dense camera path (evenly spaced along its length) and look targets, both [DENSE, 3], for one walk."""
    # Walk through part of the room (leaving the rest free for objects), looking at all of it.
    margin = clearance + 0.3
    inner_lo, inner_hi = lo[[0, 2]] + margin, hi[[0, 2]] - margin
    extent = (inner_hi - inner_lo) * rng.uniform(0.45, 0.8, 2)
    inner_lo = inner_lo + rng.uniform(0, 1, 2) * (inner_hi - inner_lo - extent)
    inner_hi = inner_lo + extent
    count = int(np.clip(2 + num_frames // 50, 3, 8))
    waypoints = [rng.uniform(inner_lo, inner_hi)]
    while len(waypoints) < count:
        # Prefer waypoints that are not bunched together (the walk covers its area) and turns of at most
        # 90 degrees (no U-turns, which a constant-speed camera would take as a jolt).
        candidates = rng.uniform(inner_lo, inner_hi, (100, 2))
        steps = candidates - waypoints[-1]
        lengths = np.linalg.norm(steps, axis=-1)
        heading = waypoints[-1] - waypoints[-2] if len(waypoints) > 1 else steps[0]
        turn = steps @ heading / np.maximum(lengths * np.linalg.norm(heading), 1e-9)  # cosine of the turn
        score = (lengths > 0.4 * extent.max()) + (turn >= 0) + 0.1 * turn
        waypoints.append(candidates[np.argmax(score)])
    waypoints = np.array(waypoints)
    heights = _eye_height(rng, lo, hi, clearance) + rng.uniform(-0.15, 0.15, count)
    walk = _by_arc_length(_catmull_rom(np.stack([waypoints[:, 0], heights, waypoints[:, 1]], -1), _DENSE))
    # Round the corners (Gaussian over about 0.3 m of path), then walk at constant speed.
    length = np.linalg.norm(np.diff(walk, axis=0), axis=-1).sum()
    sigma = max(0.3 / max(length, 1e-9) * _DENSE, 1.0)
    walk = _by_arc_length(np.stack([_smooth(walk[:, d], sigma) for d in range(3)], -1))

    look_points = rng.uniform(lo + 0.3, hi - 0.3, (count // 2 + 1, 3))  # fewer: the gaze moves slower
    look_points[:, 1] = rng.uniform(0.3, min(2.0, hi[1] - 0.3), len(look_points))  # at and below eye level
    return walk, _catmull_rom(look_points, _DENSE)


def _forward(rng, lo, hi, num_frames, clearance):
    horizontal = (0, 2)
    along = horizontal[int(np.argmax((hi - lo)[[0, 2]]))]  # look down the long side of the room
    side = 2 - along
    sign = rng.choice([-1.0, 1.0])
    start = (lo if sign > 0 else hi)[along] + sign * (clearance + 0.4 + rng.uniform(0, 0.5))
    s = np.linspace(0, 1, num_frames)
    half_side = (hi[side] - lo[side]) / 2 - clearance - 0.6
    positions = np.zeros((num_frames, 3))
    positions[:, along] = start + sign * rng.uniform(0, 0.5) * s
    positions[:, side] = (lo[side] + hi[side]) / 2 + rng.uniform(-0.3, 0.3) * half_side \
        + _wave(rng, s, rng.uniform(0.2, 0.5), (0.8, 1.5))
    positions[:, 1] = _eye_height(rng, lo, hi, clearance) + _wave(rng, s, rng.uniform(0.05, 0.15), (1.0, 2.0))
    # All cameras look at one point on the far side; a little jitter keeps the views from converging exactly.
    target = np.zeros(3)
    target[along] = (hi if sign > 0 else lo)[along]
    target[side] = (lo[side] + hi[side]) / 2
    target[1] = rng.uniform(0.8, 1.4)
    forward = target - positions
    forward[:, side] += _wave(rng, s, 0.2, (0.5, 1.0))
    return positions, forward, _wave(rng, s, 0.02, (0.5, 1.5))


def _orbit(rng, lo, hi, num_frames, clearance):
    centre = (lo + hi) / 2
    max_radius = min(hi[0] - lo[0], hi[2] - lo[2]) / 2 - clearance - 0.3
    radius = rng.uniform(0.55, 0.9) * max_radius
    s = np.arange(num_frames) / num_frames  # a full turn without repeating the first frame
    angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1.0, 1.0]) * 2 * np.pi * s
    positions = np.stack([centre[0] + radius * np.sin(angle),
                          _eye_height(rng, lo, hi, clearance) + _wave(rng, s, 0.15, (1.0, 2.0)),
                          centre[2] + radius * np.cos(angle)], -1)
    target = np.array([centre[0], rng.uniform(0.5, 1.0), centre[2]])
    return positions, target - positions, _wave(rng, s, 0.02, (0.5, 1.5))
