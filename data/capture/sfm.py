"""Camera poses for a folder of frames with pycolmap: SIFT features, matching, incremental mapping.

One shared SIMPLE_RADIAL camera (COLMAP's default model; the scene reader removes its distortion).
Pairs to match: a video's frames with their neighbours in time (and at 2^k frames) plus loop
closures found by image retrieval; a small photo set every pair; a large one each photo with its
most similar ones. Incremental mapping may split the frames into several models; they are written
as sparse/0, sparse/1, ... largest first (most registered frames), COLMAP's layout.

Mapping runs in two passes. While frames are registered one by one, the radial distortion stays
at zero and only the focal length is refined: from a few views, focal length and distortion trade
for each other, and refining both let a 48-frame walk settle on f = 174 px, k = -0.11 (true:
185 px, 0) with poses 6.6 degrees off. The second pass continues each model with distortion
refined too, over all its frames at once (COLMAP's retriangulation and global bundle adjustment).

The same frames give the same poses, on any machine: frames are imported in sequence order before
feature extraction (whose threads would otherwise number them in the order they finish, and the
mapper's choices follow the numbering), every random draw is seeded, and the mapper runs on one
thread (on several, its search for an initial pair takes whichever candidate a thread accepts
first). Extraction, retrieval and matching use all threads: their results do not depend on it.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .colmap_call import run_colmap
from .config import CaptureConfig
from .loop_index import build_index

CAMERA_MODEL = "SIMPLE_RADIAL"
_PROCESSED = r"Processed file \[(\d+)/\d+\]"  # COLMAP's feature extraction log line
_BLOCKS = 10  # matching progress steps (COLMAP logs one line per block of pairs)
MAPPING_THREADS = 1  # for poses that do not depend on the machine; see the module docstring


@dataclass
class Poses:
    models: list[int]  # registered frames of each model written under sparse/, largest first
    registered: list[str]  # names of the frames in sparse/0
    num_pairs: int
    loop_pairs: int  # of those, pairs found by retrieval (0 when every pair is matched)
    implausible: list[int]  # registered frames of each model left out for an implausible camera
    points: int  # 3D points of sparse/0
    reprojection_error: float | None  # mean over sparse/0's observations, pixels
    seconds: dict[str, float] = field(default_factory=dict)


def solve_poses(images: Path, names: list[str], work: Path, sequential: bool, config: CaptureConfig,
                log_path: Path) -> Poses:
    """Run SfM on images/<names> with `work` for the database and sparse/ models."""
    import pycolmap

    database = work / "database.db"
    device = pycolmap.Device.cpu if not pycolmap.has_cuda else pycolmap.Device.auto
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = CAMERA_MODEL
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = config.num_threads
    extraction.sift.max_num_features = config.max_features

    def extract(_) -> None:
        pycolmap.Database.open(str(database)).close()
        pycolmap.import_images(str(database), str(images), camera_mode=pycolmap.CameraMode.SINGLE, image_names=names,
                               options=reader)  # image ids in sequence order
        pycolmap.extract_features(str(database), str(images), image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=reader, extraction_options=extraction, device=device)

    run_colmap(extract, log_path, "features", len(names), "frame", config.seed, progress=_PROCESSED)
    seconds["features"] = time.perf_counter() - start

    start = time.perf_counter()
    pairs, retrieved = _pairs(database, work, sequential, len(names), config, log_path)
    pair_file = work / "pairs.txt"
    pair_file.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = config.num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = config.seed
    block = max(100, math.ceil(len(pairs) / _BLOCKS))
    pairing = pycolmap.ImportedPairingOptions(match_list_path=str(pair_file), block_size=block)
    run_colmap(lambda _: pycolmap.match_image_pairs(str(database), matching_options=matching, pairing_options=pairing,
                                                  verification_options=verification, device=device),
               log_path, "matching", math.ceil(len(pairs) / block), "block", config.seed,
               progress=r"Processing block \[(\d+)/\d+\]")
    seconds["matching"] = time.perf_counter() - start

    start = time.perf_counter()
    raw = work / "models"
    models = run_colmap(lambda bar: map_frames(database, images, raw, config, bar), log_path, "mapping", len(names),
                        "frame", config.seed)
    implausible = [m.num_reg_images() for m in models if not plausible_camera(m)]
    models = [m for m in models if plausible_camera(m)]
    for rank, model in enumerate(models):
        (work / "sparse" / str(rank)).mkdir(parents=True)
        model.write(str(work / "sparse" / str(rank)))
    shutil.rmtree(raw, ignore_errors=True)
    seconds["mapping"] = time.perf_counter() - start
    best = models[0] if models else None
    registered = sorted(best.images[i].name for i in best.reg_image_ids()) if best else []
    return Poses([m.num_reg_images() for m in models], registered, len(pairs), retrieved, implausible,
                 best.num_points3D() if best else 0, best.compute_mean_reprojection_error() if best else None, seconds)


def map_frames(database: Path, images: Path, out: Path, config: CaptureConfig, bar: tqdm,
               num_threads: int = MAPPING_THREADS) -> list:
    """Incremental mapping of the frames matched in `database`, in the two passes of the module docstring,
    with scratch models under `out`: pycolmap Reconstructions, most registered frames first."""
    import pycolmap

    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = num_threads
    options.random_seed = config.seed
    options.min_model_size = min(options.min_model_size, max(config.min_registered, 3))
    callbacks = {"initial_image_pair_callback": lambda: _advance(bar, 2),
                 "next_image_callback": lambda: _advance(bar, 1)}
    (out / "refined").mkdir(parents=True, exist_ok=True)  # COLMAP makes only the last folder of a path
    options.ba_refine_extra_params = options.mapper.abs_pose_refine_extra_params = False
    fixed = pycolmap.incremental_mapping(str(database), str(images), str(out / "fixed"), options=options, **callbacks)
    options.ba_refine_extra_params = options.mapper.abs_pose_refine_extra_params = True
    options.multiple_models = False
    models = []
    for key in sorted(fixed):
        models += pycolmap.incremental_mapping(str(database), str(images), str(out / "refined" / str(key)),
                                               options=options, input_path=str(out / "fixed" / str(key)),
                                               **callbacks).values()
    return sorted(models, key=lambda m: -m.num_reg_images())


def plausible_camera(model) -> bool:
    """COLMAP's test for a camera its mapping got wrong (focal length under 0.1 or over 10 times the image
    size, a distortion coefficient beyond +-1). The mapper applies it to the frames of models of 20
    frames or more; here it judges the whole model, whatever its size."""
    import pycolmap

    bounds = pycolmap.IncrementalPipelineOptions()
    return not any(camera.has_bogus_params(bounds.min_focal_length_ratio, bounds.max_focal_length_ratio,
                                           bounds.max_extra_param) for camera in model.cameras.values())


def _advance(bar, steps: int) -> None:
    """Count registrations; later models may register frames again, which the bar does not count past its end."""
    bar.update(min(steps, bar.total - bar.n))


def _pairs(database: Path, work: Path, sequential: bool, count: int, config: CaptureConfig,
           log_path: Path) -> tuple[list[tuple[str, str]], int]:
    """Image name pairs to match, and how many of them image retrieval proposed (loop closures)."""
    import pycolmap

    exhaustive = not sequential and count <= config.exhaustive_max
    index = None
    if not exhaustive and (not sequential or count > 2 * config.overlap):
        index = run_colmap(lambda _: build_index(database, work / "vocab_tree.bin", config.seed, config.num_threads),
                           log_path, "retrieval index", 1, "index", config.seed)
    with pycolmap.Database.open(str(database)) as db:
        names = {im.image_id: im.name for im in db.read_all_images()}

        def generator(loops: bool):
            if exhaustive:
                return pycolmap.ExhaustivePairGenerator(pycolmap.ExhaustivePairingOptions(), db)
            if not sequential:
                options = pycolmap.VocabTreePairingOptions(vocab_tree_path=str(index), num_images=config.retrieve,
                                                           num_threads=config.num_threads)
                return pycolmap.VocabTreePairGenerator(options, db)
            options = pycolmap.SequentialPairingOptions(overlap=config.overlap, quadratic_overlap=True,
                                                        num_threads=config.num_threads)
            if loops:
                options.loop_detection = True
                options.vocab_tree_path = str(index)
                options.loop_detection_period = config.loop_every
                options.loop_detection_num_images = config.retrieve
            return pycolmap.SequentialPairGenerator(options, db)

        def generate(loops: bool) -> set[tuple[str, str]]:
            pairs = run_colmap(lambda _: generator(loops).all_pairs(), log_path, "pairs", 1, "list", config.seed)
            return {tuple(sorted((names[a], names[b]))) for a, b in pairs if a != b}

        pairs = generate(loops=index is not None)
        if index is None:
            retrieved = 0
        else:
            retrieved = len(pairs - generate(loops=False)) if sequential else len(pairs)
    return sorted(pairs), retrieved
