"""The viewer's inputs and the arrays it hands to the browser, against closed forms and other libraries;
its bad-input messages. The browser itself: tests/test_view_browser.py."""

import json
import socket

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement
from scipy.spatial.transform import Rotation

from model.gaussians import SH_C0, Gaussians
from model.ply import ply_field_names, save_ply
from model.render.sh import SH_C1
from view.__main__ import main
from view.reconstruction import cap_by_opacity, open_reconstruction
from view.server import check_port, parse_address
from view.splats import covariances, splat_arrays


def random_gaussians(n: int, sh_degree: int = 1, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(means=torch.randn(n, 3, generator=g), log_scales=torch.rand(n, 3, generator=g) * 3 - 5,
                     quats=torch.randn(n, 4, generator=g), opacity_logits=torch.randn(n, generator=g) * 2,
                     sh=torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.5)


def write_output_folder(folder, gaussians, with_images=True):
    """An infer.py output folder: gaussians.ply, cameras.json, inputs/, renders/."""
    folder.mkdir(parents=True, exist_ok=True)
    save_ply(gaussians, folder / "gaussians.ply")
    c2w = np.eye(4)
    entries = lambda names: [{"frame": f"images/{n}.png", "index": i, "c2w": c2w.tolist(),  # noqa: E731
                              "fx": 50.0, "fy": 60.0, "cx": 16.0, "cy": 8.0} for i, n in enumerate(names)]
    (folder / "cameras.json").write_text(json.dumps({"width": 32, "height": 16, "inputs": entries(["a", "b"]),
                                                     "targets": entries(["c"])}))
    if with_images:
        (folder / "inputs").mkdir()
        (folder / "renders").mkdir()
        iio.imwrite(folder / "inputs" / "a.png", np.full((16, 32, 3), 200, np.uint8))
        iio.imwrite(folder / "renders" / "c_gt.png", np.full((16, 32, 3), 50, np.uint8))


def test_reads_an_output_folder_with_cameras_and_images(tmp_path):
    g = random_gaussians(10)
    write_output_folder(tmp_path / "out", g)
    rec = open_reconstruction(tmp_path / "out")
    assert rec.ply.name == "gaussians.ply" and torch.equal(rec.gaussians.means, g.means)
    assert [(c.name, c.role) for c in rec.cameras] == [("a", "input"), ("b", "input"), ("c", "held-out")]
    a, b, c = rec.cameras
    assert (a.image == 200).all() and b.image is None and (c.image == 50).all()
    assert a.fov_y == pytest.approx(2 * np.arctan(8 / 60))
    # a PLY alone, or a refinement folder (refined.ply), shows the Gaussians; cameras.json beside is used
    assert len(open_reconstruction(tmp_path / "out" / "gaussians.ply").cameras) == 3
    save_ply(g, tmp_path / "refined.ply")
    rec = open_reconstruction(tmp_path)
    assert rec.ply.name == "refined.ply" and rec.cameras == []


def test_cap_keeps_the_most_opaque(tmp_path):
    g = random_gaussians(1000)
    kept, dropped_below = cap_by_opacity(g, 300)
    order = np.argsort(-g.opacities.numpy(), kind="stable")
    assert sorted(kept.means[:, 0].tolist()) == sorted(g.means[order[:300], 0].tolist())
    assert dropped_below == pytest.approx(float(g.opacities[order[300]]))
    assert kept.opacities.min() >= dropped_below
    assert cap_by_opacity(g, 1000)[0] is g


def test_covariances_match_scipy_rotations():
    g = random_gaussians(50)
    rot = Rotation.from_quat(g.quats[:, [1, 2, 3, 0]].double().numpy()).as_matrix()  # scipy: xyzw
    expected = rot @ (g.scales.double().numpy()[:, :, None] ** 2 * rot.transpose(0, 2, 1))
    np.testing.assert_allclose(covariances(g).numpy(), expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("unit", [1e-3, 1.0, 300.0])
def test_covariances_survive_float16_at_any_scene_unit(unit):
    """viser stores covariances as float16; after the scale it undoes in the browser they must keep
    their value, whatever the unit of the scene (millimetre-sized Gaussians included)."""
    g = random_gaussians(200)
    g = Gaussians(g.means * unit, g.log_scales + np.log(unit), g.quats, g.opacity_logits, g.sh)
    arrays = splat_arrays(g)
    received = arrays.covariances.astype(np.float16).astype(np.float64) / arrays.scale**2  # what the browser gets
    truth = covariances(g).double().numpy()
    scale = np.abs(truth).reshape(len(truth), -1).max(1)[:, None, None]
    assert (np.abs(received - truth) / scale).max() < 2e-3
    np.testing.assert_allclose(arrays.centers / arrays.scale, g.means.numpy(), rtol=1e-6)
    if unit == 1e-3:  # without the scale, float16 would have flushed them
        assert (np.abs(covariances(g).numpy().astype(np.float16).astype(np.float64) - truth) / scale).max() > 0.1


def test_colours_are_sh_toward_the_cameras():
    g = random_gaussians(100, sh_degree=1)
    g.sh[:, 1:] *= 0.3  # keep colours inside [0, 1] so the closed forms need no clamping
    dc = 0.5 + SH_C0 * g.sh[:, 0]
    assert ((dc > 0) & (dc < 1)).all()
    np.testing.assert_allclose(splat_arrays(g).rgbs, dc.numpy(), atol=1e-6)  # no cameras: degree 0
    # one camera far along -x of every Gaussian: direction +x, basis (C0, -C1 y, C1 z, -C1 x) = (C0, 0, 0, -C1)
    far = torch.tensor([[-1e6, 0.0, 0.0]])
    np.testing.assert_allclose(splat_arrays(g, far).rgbs, (dc - SH_C1 * g.sh[:, 3]).numpy(), atol=1e-4)
    # cameras on both sides: the degree-1 terms cancel in the mean
    both = torch.tensor([[-1e6, 0.0, 0.0], [1e6, 0.0, 0.0]])
    np.testing.assert_allclose(splat_arrays(g, both).rgbs, dc.numpy(), atol=1e-4)


def test_port_in_use_names_a_free_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"port {port} on 127.0.0.1 is already in use") as err:
            check_port("127.0.0.1", port)
        suggested = int(str(err.value).split("--port ")[1].split(",")[0])
        check_port("127.0.0.1", suggested)
    with pytest.raises(ValueError, match="not a valid address"):
        check_port("no-such-host.invalid", 8080)
    assert parse_address("8081") == ("127.0.0.1", 8081) and parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(ValueError, match="HOST:"):
        parse_address("localhost")


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    (tmp_path / "notes.ply").write_text("hello")
    write_output_folder(tmp_path / "empty", random_gaussians(3, sh_degree=0), with_images=False)
    names = ply_field_names(0)  # the same file with no vertices
    PlyData([PlyElement.describe(np.empty(0, [(n, "f4") for n in names]), "vertex")]).write(
        str(tmp_path / "empty" / "gaussians.ply"))
    (tmp_path / "nothing").mkdir()
    (tmp_path / "two").mkdir()
    for name in ("a.ply", "b.ply"):
        save_ply(random_gaussians(3), tmp_path / "two" / name)
    write_output_folder(tmp_path / "badcams", random_gaussians(3), with_images=False)
    (tmp_path / "badcams" / "cameras.json").write_text("{}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        save_ply(random_gaussians(3), tmp_path / "ok.ply")
        cases = [([str(tmp_path / "missing")], "does not exist"),
                 ([str(tmp_path / "notes.ply")], "not a readable PLY"),
                 ([str(tmp_path / "empty")], "no Gaussians"),
                 ([str(tmp_path / "nothing")], "holds no .ply"),
                 ([str(tmp_path / "two")], "several PLY files"),
                 ([str(tmp_path / "badcams")], "not a cameras.json"),
                 ([str(tmp_path / "ok.ply"), "--port", port], "already in use"),
                 ([str(tmp_path / "ok.ply"), "--max-gaussians", "0"], "at least 1")]
        for args, fragment in cases:
            assert main(args + ["--port", "0"] if "--port" not in args else args) == 2, args
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, lines)


def test_infer_exports_and_checks_the_view_port_first(tmp_path, capsys):
    from inference import infer
    from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
    from tests.support import write_checkpoint

    scene = tmp_path / "room"
    write_dl3dv_scene(generate_scene(ProceduralConfig(num_frames=10, width=64, height=32, seed=3)), scene)
    checkpoint = write_checkpoint(tmp_path / "tiny.safetensors")
    args = ["--views", str(scene), "--checkpoint", str(checkpoint), "--num-views", "4", "--resolution", "64x32",
            "--no-lpips", "--min-opacity", "0"]
    with socket.socket() as busy:  # --view on a busy port fails before any work, output folder untouched
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = tmp_path / "viewed"
        assert infer.main(args + ["--out", str(out), "--view", str(busy.getsockname()[1])]) == 2
        assert "already in use" in capsys.readouterr().err and not out.exists()
    out = tmp_path / "out"
    assert infer.main(args + ["--out", str(out), "--export", "splat,compressed-ply"]) == 0
    count = open_reconstruction(out).gaussians.count
    assert (out / "gaussians.splat").stat().st_size == 32 * count == 32 * 4 * 64 * 32
    assert (out / "gaussians.compressed.ply").is_file()
    assert sorted(p.name for p in (out / "inputs").iterdir()) == sorted(
        f"{c.name}.png" for c in open_reconstruction(out).cameras if c.role == "input")
