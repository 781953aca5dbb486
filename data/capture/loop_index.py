"""A vocabulary tree trained on the capture's own SIFT features, for COLMAP's image retrieval.

COLMAP finds loop closures in a video (and the most similar photos of a large set) by querying a
visual-word index. Its prebuilt trees are a download; a tree trained here on a sample of the
capture's descriptors needs nothing from outside and fits the scene it indexes (what COLMAP's
`vocab_tree_builder` does), at a few seconds of k-means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_TRAINING_DESCRIPTORS = 200_000
POINTS_PER_WORD = 39  # k-means wants at least this many training points per cluster
MIN_WORDS, MAX_WORDS = 64, 16384


def num_words(num_descriptors: int) -> int:
    """The largest power of two with enough training points per word, within [MIN_WORDS, MAX_WORDS]."""
    words = 2 ** int(np.log2(max(num_descriptors // POINTS_PER_WORD, 1)))
    return int(np.clip(words, MIN_WORDS, MAX_WORDS))


def build_index(database: Path, path: Path, seed: int = 0, num_threads: int = -1) -> Path:
    """Train a tree on (a sample of) the descriptors in `database` and write it to `path`."""
    import pycolmap

    with pycolmap.Database.open(str(database)) as db:
        descriptors = [db.read_descriptors(im.image_id).data for im in db.read_all_images()]
    data = np.concatenate([d for d in descriptors if len(d)]).astype(np.float32)  # [D, 128], uint8 values
    if len(data) > MAX_TRAINING_DESCRIPTORS:
        keep = np.random.default_rng(seed).choice(len(data), MAX_TRAINING_DESCRIPTORS, replace=False)
        data = data[np.sort(keep)]
    options = pycolmap.VisualIndex.BuildOptions()
    options.num_visual_words = num_words(len(data))
    options.num_iterations = 20  # COLMAP's default 100 x 3 rounds buys little here at many times the cost
    options.num_rounds = 1
    options.num_threads = num_threads
    index = pycolmap.VisualIndex.create(data.shape[1], 64)
    index.build(options, pycolmap.FeatureDescriptorsFloat(pycolmap.FeatureExtractorType.SIFT, data))
    index.write(str(path))
    return path
