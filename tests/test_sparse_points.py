"""COLMAP points placed in a scene's world frame, whatever frame the COLMAP model was made in."""

import math

import pytest
import torch

from data.errors import SceneError
from data.open_scene import open_scene
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from data.sparse_points import align_similarity, scene_points
from model.cameras import invert_rigid
from model.rotations import matrix_to_quat, quat_to_matrix

pytest.importorskip("pycolmap")


def similarity(seed: int) -> torch.Tensor:
    """A random world change: rotation, scale 0.2-5 and translation, as [4, 4] float64."""
    g = torch.Generator().manual_seed(seed)
    m = torch.eye(4, dtype=torch.float64)
    scale = math.exp(float(torch.empty(1).uniform_(math.log(0.2), math.log(5.0), generator=g)))
    m[:3, :3] = scale * quat_to_matrix(torch.randn(4, generator=g, dtype=torch.float64))
    m[:3, 3] = torch.randn(3, generator=g, dtype=torch.float64) * 10
    return m


def write_text_model(folder, c2w, names, fx, fy, cx, cy, width, height, points, colors):
    """A COLMAP text model: one PINHOLE camera, images with their world-to-camera poses, points3D."""
    folder.mkdir(parents=True)
    (folder / "cameras.txt").write_text(f"1 PINHOLE {width} {height} {fx!r} {fy!r} {cx!r} {cy!r}\n")
    lines = []
    for i, (pose, name) in enumerate(zip(c2w, names)):
        w2c = invert_rigid(pose)
        q, t = matrix_to_quat(w2c[:3, :3]).tolist(), w2c[:3, 3].tolist()
        lines += [f"{i + 1} {' '.join(map(repr, q))} {' '.join(map(repr, t))} 1 {name}", ""]
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    rgb = (colors * 255).round().int().tolist()
    (folder / "points3D.txt").write_text("".join(
        f"{i + 1} {' '.join(map(repr, p))} {' '.join(map(str, c))} 0.5\n" for i, (p, c) in enumerate(zip(points.tolist(), rgb))))


@pytest.fixture(scope="module")
def generated():
    return generate_scene(ProceduralConfig.preset("tiny", num_frames=10, width=48, height=32, seed=4))


def surface(generated, count=300, seed=0):
    """True-surface points seen by the frames, with colours, in the generator's world."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(len(generated.c2w), (count,), generator=g)
    i = torch.randint(generated.images.shape[1], (count,), generator=g)
    j = torch.randint(generated.images.shape[2], (count,), generator=g)
    fx, fy, cx, cy = generated.intrinsics[0].double().tolist()
    z = generated.depth[v, i, j].double()
    local = torch.stack([(j + 0.5 - cx) / fx * z, (i + 0.5 - cy) / fy * z, z], -1)
    c2w = generated.c2w[v].double()
    return (c2w[:, :3, :3] @ local[..., None])[..., 0] + c2w[:, :3, 3], generated.images[v, i, j].double()


@pytest.mark.parametrize("seed", [0, 1])
def test_points_of_a_model_in_another_frame_land_on_the_true_surface(tmp_path, generated, seed):
    # The scene is a DL3DV folder; beside it, a COLMAP model of the same photos made in another world
    # (moved, turned and scaled), named by file name only, as DL3DV ships it in colmap/sparse/0.
    write_dl3dv_scene(generated, tmp_path / "scene")
    points, colors = surface(generated)
    m = similarity(seed)
    c2w = generated.c2w.double()
    model_c2w = m @ c2w
    model_c2w[:, :3, :3] /= m[:3, 0].norm()
    names = [f"frame_{i + 1:05d}.png" for i in range(len(c2w))]
    h, w = generated.images.shape[1:3]
    write_text_model(tmp_path / "scene" / "colmap" / "sparse" / "0", model_c2w.flip(0), names[::-1],
                     *generated.intrinsics[0].tolist(), w, h, points @ m[:3, :3].T + m[:3, 3], colors)
    scene = open_scene(tmp_path / "scene")
    got, got_colors = scene_points(scene, tmp_path / "scene")
    # The scene's frame is the generator's, up to transforms.json's float precision.
    assert torch.allclose(got, points, atol=1e-4 * float(points.abs().max()))
    assert torch.allclose(got_colors, (colors * 255).round() / 255, atol=1e-9)


def test_rotation_comes_from_orientations_on_a_straight_track():
    # Cameras on a line: centres alone leave the rotation about the line free; orientations fix it.
    c2w = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    c2w[:, 0, 3] = torch.arange(5.0)
    c2w[:, :3, :3] = quat_to_matrix(torch.tensor([0.9, 0.1, -0.3, 0.2], dtype=torch.float64))
    m = similarity(3)
    moved = m @ c2w
    moved[:, :3, :3] /= m[:3, 0].norm()
    assert torch.allclose(align_similarity(c2w, moved), m, atol=1e-9)


def test_missing_or_foreign_models_are_refused(tmp_path, generated):
    write_dl3dv_scene(generated, tmp_path / "scene")
    scene = open_scene(tmp_path / "scene")
    with pytest.raises(SceneError, match="no COLMAP model"):
        scene_points(scene, tmp_path / "scene")
    points, colors = surface(generated)
    h, w = generated.images.shape[1:3]
    names = [f"frame_{i + 1:05d}.png" for i in range(10)]
    shuffled = generated.c2w.double()[torch.randperm(10, generator=torch.Generator().manual_seed(0))]
    write_text_model(tmp_path / "scene" / "sparse" / "0", shuffled, names, *generated.intrinsics[0].tolist(), w, h,
                     points, colors)
    with pytest.raises(SceneError, match="does not match the scene's cameras"):
        scene_points(scene, tmp_path / "scene")
