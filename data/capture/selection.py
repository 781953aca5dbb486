"""Which frames of a video to keep: spread evenly over time, each the sharpest of its neighbourhood.

Sharpness is the variance of the Laplacian of the grey frame: motion blur and defocus remove the
high frequencies it measures, so of several nearly identical neighbouring frames the least blurred
scores highest. Scores compare frames of one video only; their absolute value means nothing.
"""

from __future__ import annotations

import numpy as np


def sharpness(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey image [H, W] (any numeric dtype)."""
    g = np.asarray(grey, dtype=np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]  # [H-2, W-2]
    return float(lap.var())


def pick_frames(scores: np.ndarray, count: int) -> list[int]:
    """Indices of `count` frames of a sequence with sharpness scores [N]: the sequence is cut into
    `count` windows of (nearly) equal length and the sharpest frame of each is kept (all frames when
    N <= count). Sorted, so video order is kept."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n <= count:
        return list(range(n))
    edges = np.linspace(0, n, count + 1).round().astype(int)  # [count + 1]
    return [int(a + np.argmax(scores[a:b])) for a, b in zip(edges[:-1], edges[1:])]
