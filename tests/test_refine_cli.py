"""python -m refine end to end on procedural scenes: from an infer.py output, from random points and from
real structure-from-motion points, on infer.py's views; its result in the viewer; and every bad input."""

import io
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from plyfile import PlyData, PlyElement

from data.open_scene import open_scene
from data.procedural import ProceduralConfig, generate_scene
from inference import infer
from inference.evaluation import ViewScores
from model.cameras import Cameras
from model.ply import load_ply, save_ply
from model.render import rasterize
from refine.__main__ import main
from tests.support import one_error_line, write_checkpoint

ROOT = Path(__file__).resolve().parent.parent

QUICK = ["--backend", "cpu", "--device", "cpu", "--quiet", "--no-lpips"]


@pytest.fixture(scope="module")
def inferred(scene_dir, tmp_path_factory):
    """An infer.py output folder: 4 KMeans inputs, frames 0, 8, 16 held out, at 64x32."""
    root = tmp_path_factory.mktemp("inferred")
    checkpoint = write_checkpoint(root / "tiny.safetensors")
    out = root / "out"
    assert infer.main(["--views", str(scene_dir), "--checkpoint", str(checkpoint), "--num-views", "4",
                       "--resolution", "64x32", "--eval", "--no-lpips", "--out", str(out)]) == 0
    return out


def render_world(ply: Path, scene_dir: Path, frames: list[str], width: int, height: int) -> torch.Tensor:
    """The PLY rendered in the scene's own world frame at `frames`, independently of the command's frame."""
    scene = open_scene(scene_dir)
    idx = [scene.names.index(f) for f in frames]
    cams = Cameras(scene.intrinsics[idx].float() * torch.tensor([width / scene.width, height / scene.height] * 2),
                   scene.c2w[idx].float(), width, height)
    g = load_ply(ply)
    colors, _, _ = rasterize(g.means, g.rotations, g.scales, g.opacities, g.sh, cams.viewmats, cams.Ks, width,
                             height, sh_degree=g.sh_degree, backgrounds=torch.ones(len(idx), 3), backend="cpu")
    return colors


def held_out_psnr(report: dict, colors: torch.Tensor, scene_dir: Path) -> float:
    scene = open_scene(scene_dir)
    p = report["protocol"]
    idx = [scene.names.index(f) for f in p["targets"]]
    images, _ = scene.load_views(idx, size=(p["height"], p["width"]))
    scores = ViewScores(with_lpips=False)
    for pred, target in zip(colors, images):
        scores.add(pred, target)
    return scores.mean()["psnr"]


def test_from_an_infer_output_folder_uses_its_views(inferred, scene_dir, tmp_path, capsys):
    before = (inferred / "gaussians.ply").read_bytes()
    out = tmp_path / "refined"
    assert main(["--views", str(scene_dir), "--ply", str(inferred), "--out", str(out), "--steps", "20", *QUICK]) == 0
    report = json.loads((out / "metrics.json").read_text())
    recorded = json.loads((inferred / "metrics.json").read_text())
    cameras = json.loads((inferred / "cameras.json").read_text())
    p = report["protocol"]
    assert p["inputs"] == [c["frame"] for c in cameras["inputs"]] and (p["width"], p["height"]) == (64, 32)
    assert p["targets"] == [v["frame"] for v in recorded["per_view"]] == ["images_4/frame_00001.png",
                                                                          "images_4/frame_00009.png",
                                                                          "images_4/frame_00017.png"]
    # The start scored like infer.py scores its prediction: the same numbers.
    assert report["before"]["psnr"] == pytest.approx(recorded["mean"]["psnr"], abs=0.02)
    assert report["before"]["ssim"] == pytest.approx(recorded["mean"]["ssim"], abs=1e-3)
    assert report["after"]["psnr"] > report["before"]["psnr"]
    assert report["gaussians"] == {"before": recorded["gaussians_kept"], "after": recorded["gaussians_kept"]}
    assert report["config"]["steps"] == 20 and not report["config"]["densify"]  # the short preset
    assert (inferred / "gaussians.ply").read_bytes() == before
    assert "held-out after: PSNR" in capsys.readouterr().out
    # What the viewer reads beside refined.ply: infer.py's cameras and input images for the same views.
    assert json.loads((out / "cameras.json").read_text()) == cameras
    for name in ("inputs", "renders"):
        assert {p.name for p in (inferred / name).glob("*.png") if not p.name.endswith("_pred.png")} <= {
            p.name for p in (out / name).iterdir()}
    # A refinement's output folder starts the next one on the same views, where the first one ended.
    again = tmp_path / "again"
    assert main(["--views", str(scene_dir), "--ply", str(out), "--out", str(again), "--steps", "5", *QUICK]) == 0
    second = json.loads((again / "metrics.json").read_text())
    assert second["protocol"] == report["protocol"]
    assert second["before"]["psnr"] == pytest.approx(report["after"]["psnr"], abs=0.01)


@pytest.mark.parametrize("init", ["random", "sfm"])
def test_classic_3dgs_from_scratch(init, scene_dir, tmp_path, capsys):
    views = scene_dir
    if init == "sfm":  # a capture posed by real structure from motion: a COLMAP scene, images/ + sparse/0
        pycolmap = pytest.importorskip("pycolmap")
        views = tmp_path / "captured"
        generated = generate_scene(ProceduralConfig(num_frames=24, width=256, height=128, seed=3))
        (views / "images").mkdir(parents=True)
        for i, image in enumerate(generated.images):
            Image.fromarray((image * 255).round().byte().numpy()).save(views / "images" / f"frame_{i + 1:05d}.png")
        work = tmp_path / "sfm"
        work.mkdir()
        pycolmap.set_random_seed(0)  # one thread and fixed seeds: the same model every run
        extraction, matching = pycolmap.FeatureExtractionOptions(), pycolmap.FeatureMatchingOptions()
        mapping, verification = pycolmap.IncrementalPipelineOptions(), pycolmap.TwoViewGeometryOptions()
        extraction.num_threads = matching.num_threads = mapping.num_threads = 1
        mapping.random_seed = verification.ransac.random_seed = 0
        pycolmap.extract_features(work / "db.db", views / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                                  extraction_options=extraction)
        pycolmap.match_exhaustive(work / "db.db", matching_options=matching, verification_options=verification)
        models = pycolmap.incremental_mapping(work / "db.db", views / "images", work, options=mapping)
        largest = max(models.values(), key=lambda r: r.num_reg_images())
        assert largest.num_reg_images() >= 16 and largest.num_points3D() >= 50
        (views / "sparse" / "0").mkdir(parents=True)
        largest.write(views / "sparse" / "0")
    out = tmp_path / "out"
    args = ["--views", str(views), "--init", init, "--out", str(out), "--steps", "300", "--num-views", "8",
            "--resolution", "64x32" if init == "random" else "128x64", "--init-points", "3000", *QUICK]
    if init == "sfm":
        args.remove("--init-points")
        args.remove("3000")
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((out / "metrics.json").read_text())
    p = report["protocol"]
    assert p["num_inputs"] == 8 and p["num_targets"] == 3
    assert report["config"]["densify"] and report["config"]["steps"] == 300  # graphdeco's schedule, scaled
    assert [e["step"] for e in report["events"] if e["kind"] == "densify"] == [100]
    assert report["gaussians"]["before"] == (3000 if init == "random" else largest.num_points3D())
    ply = out / "refined.ply"
    assert load_ply(ply).count == report["gaussians"]["after"] and load_ply(ply).sh_degree == 3
    # refined.ply lies in the scene's world frame: rendered there, it scores what the command reported.
    colors = render_world(ply, views, p["targets"], p["width"], p["height"])
    assert held_out_psnr(report, colors, views) == pytest.approx(report["after"]["psnr"], abs=0.05)
    assert report["after"]["psnr"] > 14.0


def damaged_plys(folder: Path, source: Path) -> dict[str, Path]:
    """Real PLYs written by model/ply.py from `source`'s first 200 Gaussians, then damaged as files are."""
    folder.mkdir()
    good = save_ply(load_ply(source).index(torch.arange(200)), folder / "good.ply")
    rows = PlyData.read(str(good))["vertex"].data
    kept = [name for name in rows.dtype.names if name != "opacity"]
    without = np.empty(len(rows), [(name, "f4") for name in kept])
    for name in kept:
        without[name] = rows[name]
    nan = rows.copy()
    nan["scale_1"][17] = np.nan
    files = {"missing field": without, "nan": nan, "no vertices": rows[:0]}
    for name, data in files.items():
        PlyData([PlyElement.describe(data, "vertex")]).write(str(folder / f"{name}.ply"))
    raw = good.read_bytes()
    (folder / "truncated.ply").write_bytes(raw[: len(raw) - 1000])  # the last rows cut off, as by a full disk
    (folder / "text.ply").write_text("x y z\n0 0 0\n")
    return {name: folder / f"{name}.ply" for name in [*files, "truncated", "text"]}


def test_bad_inputs_give_one_clear_line(scene_dir, inferred, tmp_path, capsys):
    """Every mistake is refused before any work (no view decoded, no output folder made), with one line
    saying what is wrong and what to do; nothing the user had is touched."""
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    plys = damaged_plys(tmp_path / "plys", inferred / "gaussians.ply")
    views = ["--views", str(scene_dir)]
    random, ply = [*views, "--init", "random"], [*views, "--ply", str(plys["missing field"].parent / "good.ply")]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [
        ([*views, "--ply", str(plys["missing field"])], ("is not a 3DGS PLY in the graphdeco layout: missing fields "
          "['opacity']; pass a 3DGS PLY as infer.py or graphdeco's 3DGS writes it")),
        ([*views, "--ply", str(plys["nan"])], "contains NaN or infinite values in fields ['scale_1']"),
        ([*views, "--ply", str(plys["truncated"])], "early end-of-file); pass a 3DGS PLY"),
        ([*views, "--ply", str(plys["text"])], "is not a readable PLY file"),
        ([*views, "--ply", str(plys["no vertices"])], ("holds no Gaussians; pass a reconstruction that has some, or "
          "start from scratch with --init random or --init sfm")),
        ([*views, "--ply", str(tmp_path / "none.ply")], "--ply " + str(tmp_path / "none.ply") + " does not exist"),
        ([*views, "--ply", str(tmp_path / "plys")], "holds several PLY files"),
        (["--views", str(tmp_path / "nowhere"), "--init", "random"], "does not exist; pass a scene folder"),
        (["--views", str(tmp_path / "occupied"), "--init", "random"], "is not a scene: found no"),
        ([*random, "--steps", "-5"], "--steps must be a positive number of optimisation steps, got -5"),
        ([*random, "--steps", "0"], "--steps must be a positive number of optimisation steps, got 0"),
        ([*random, "--num-views", "1"], "at least 2"),
        ([*random, "--resolution", "50x30"], "multiples of 16"),
        ([*ply, "--init-points", "10"], "--init-points needs --init random"),
        ([*random, "--set", "densify_intervall=3"], ("unknown config key densify_intervall (did you mean "
          "densify_interval?)")),
        ([*random, "--set", "steps=2.5"], "steps must be an integer, got 2.5"),
        ([*random, "--set", "background=x"], ("background must be a list of 3 values such as background=[..., ..., "
          "...], got 'x'")),
        ([*random, "--set", "densify=maybe"], "densify must be true or false, got 'maybe'"),
        ([*random, "--set", "min_opacity=nan"], "min_opacity must be finite, got nan"),
        ([*random, "--set", "min_opacity=1"], "min_opacity must lie in [0, 1)"),
        ([*random, "--set", "steps"], "override 'steps' must look like key.sub=value"),
        ([*random, "--export", "jpeg"], "unknown export format jpeg"),
        ([*random, "--backend", "gsplat"], "--backend gsplat does not render on cpu; use --backend auto"),
        ([*random, "--view", str(busy.getsockname()[1])], "is already in use (another viewer?); pass --view 127.0.0.1:"),
        ([*random, "--view", "0.0.0.0:70000"], "port 70000 is out of range (0-65535); pass e.g. --view 0.0.0.0:8080"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*random, "--device", "cuda"], "no CUDA device is available; use --device cpu"))
    try:
        for args, fragment in cases:
            out = tmp_path / "out"
            code = main([*QUICK, *args, "--out", str(out)])  # the case's options after QUICK's
            err = capsys.readouterr().err
            one_error_line(code, err, fragment)
            assert "refine:" not in err and not out.exists(), (args, err)  # nothing done, nothing left
        code = main([*random, "--out", str(occupied), *QUICK])
        one_error_line(code, capsys.readouterr().err, "is not empty; choose another folder or pass --overwrite")
        assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]
    finally:
        busy.close()
    with pytest.raises(SystemExit) as exit_info:  # argparse: exactly one way to start
        main([*random, "--ply", str(inferred), "--out", str(tmp_path / "h")])
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_never_writes_into_the_folder_of_its_input(inferred, scene_dir, tmp_path, capsys):
    out = tmp_path / "again"
    out.mkdir()
    ply = out / "refined.ply"
    ply.write_bytes((inferred / "gaussians.ply").read_bytes())
    before = ply.read_bytes()
    code = main(["--views", str(scene_dir), "--ply", str(ply), "--out", str(out), "--overwrite", "--steps", "1",
                 *QUICK])
    one_error_line(code, capsys.readouterr().err, f"--out {out} holds the input refined.ply")
    code = main(["--views", str(scene_dir), "--ply", str(inferred), "--out", str(inferred), "--overwrite", *QUICK])
    one_error_line(code, capsys.readouterr().err, "holds the input gaussians.ply, whose metrics.json and "
                   "cameras.json refinement would replace; choose another folder")
    assert ply.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["refined.ply"]


@pytest.mark.parametrize("start", ["random", "robust"])
def test_density_control_removing_every_gaussian_says_what_to_change(start, scene_dir, inferred, tmp_path, capsys):
    """Pruning thresholds no Gaussian survives: graphdeco's opacity prune (min_opacity above what 20 steps
    can reach from the random start's 0.1) or SpotlessSplats' utilization prune (a threshold no use meets)."""
    out = tmp_path / "out"
    args = ["--views", str(scene_dir), "--out", str(out), "--steps", "20", "--num-views", "4", "--resolution",
            "64x32", *QUICK]
    if start == "random":
        args += ["--init", "random", "--init-points", "500", "--set", "densify_interval=5", "--set",
                 "min_opacity=0.9"]
        expected = ["density control pruned all ", (" Gaussians at step 5 of 20: each had an opacity below "
                    "min_opacity=0.9, so nothing is left to render; lower min_opacity (e.g. --set min_opacity=0.001)"),
                    "or turn density control off with --set densify=false"]
    else:
        args += ["--ply", str(inferred), "--robust", "--set", "ubp_interval=2", "--set", "ubp_threshold=1e9"]
        expected = [("robust pruning removed all 8,192 remaining Gaussians at step 6 of 20: no training view used "
                     "them enough (ubp_threshold=1e+09)"), "lower ubp_threshold or min_opacity, or refine without --robust"]
    code = main(args)
    err = capsys.readouterr().err
    line = one_error_line(code, err, expected[0])
    assert all(part in line for part in expected), line
    assert "refine:" in err and not out.exists()  # it ran, and left no partial outputs


def run_refine(args: list, file_size: int | None = None, **popen) -> subprocess.Popen:
    """python -m refine in a child process (this tree's code) whose files may not grow beyond `file_size`
    bytes: a write past it fails with EFBIG, as on a full disk. Ctrl+C (SIGINT) raises KeyboardInterrupt
    there even when this process ignores it, as a background job does."""
    limit = (f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, "
             f"({file_size},) * 2); " if file_size is not None else "")
    code = (f"import resource, runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); {limit}"
            "sys.argv[0] = 'refine'; runpy.run_module('refine', run_name='__main__', alter_sys=True)")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, text=True, **pipes)


@pytest.mark.usefixtures("rasterizer_built")  # children that cannot write files only load the kernel
def test_full_disk_and_unwritable_out_leave_everything_as_it_was(scene_dir, inferred, tmp_path):
    args = ["--views", scene_dir, "--ply", inferred, "--steps", 2, *QUICK]
    proc = run_refine([*args, "--out", tmp_path / "new" / "out"], file_size=0)  # no byte can be written
    _, err = proc.communicate(timeout=600)
    one_error_line(proc.returncode, err, f"--out {tmp_path / 'new' / 'out'} cannot be written to (File too large); "
                   "choose a folder you can write to, on a disk with free space")
    assert "refine:" not in err and not (tmp_path / "new").exists()  # refused before any work

    out = tmp_path / "out"  # the disk fills up half way: the renders fit, refined.ply (2 MB) does not
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "metrics.json").write_text('{"from": "an earlier run"}')
    before = (inferred / "gaussians.ply").read_bytes()
    proc = run_refine([*args, "--out", out, "--overwrite"], file_size=64 * 1024)
    _, err = proc.communicate(timeout=600)
    one_error_line(proc.returncode, err, f"writing the outputs to {out} failed (File too large); the partial "
                   "outputs were removed: free space on its disk or choose another --out")
    assert "refine:" in err  # it did the work
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt"]
    assert json.loads((out / "metrics.json").read_text()) == {"from": "an earlier run"}
    assert (inferred / "gaussians.ply").read_bytes() == before


def served_scene(url: str, timeout: float = 60) -> tuple[dict, dict]:
    """What a browser receives from the viser server at `url`, read as viser's client reads it (zstd
    msgpack, then 8-byte aligned binary buffers): the scene nodes' creation messages and positions by name."""
    import msgspec
    import viser
    import zstandard
    from websockets.sync.client import connect

    nodes, positions = {}, {}
    deadline = time.monotonic() + timeout
    with connect(url.replace("http://", "ws://"), subprotocols=[f"viser-v{viser.__version__}"], max_size=None) as ws:
        while time.monotonic() < deadline:
            try:
                data = ws.recv(timeout=3 if "/gaussians" in nodes else deadline - time.monotonic())
            except TimeoutError:
                break  # the scene has been sent
            size, packed = int.from_bytes(data[:8], "little"), int.from_bytes(data[8:16], "little")
            inner = msgspec.msgpack.decode(zstandard.ZstdDecompressor().decompress(data[16:16 + packed], size))
            offset, buffers = 16 + packed, []
            for length in inner["binaryBufferLengths"]:
                offset += -offset % 8
                buffers.append(data[offset:offset + length])
                offset += length
            for message in inner["messages"]:
                if message["type"] == "SetPositionMessage":
                    positions[message["name"]] = np.array(message["position"])
                elif message["type"] in ("GaussianSplatsMessage", "CameraFrustumMessage"):
                    props = message["props"]
                    if "buffer" in props:
                        placeholder = props["buffer"]
                        props["buffer"] = np.frombuffer(buffers[placeholder["__binary_index"]], placeholder["dtype"])
                    nodes[message["name"]] = props
    return nodes, positions


def test_view_serves_the_refined_splats_with_their_cameras(scene_dir, inferred, tmp_path):
    out = tmp_path / "out"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = run_refine(["--views", scene_dir, "--ply", inferred, "--out", out, "--steps", 2, "--export", "splat",
                       "--view", f"127.0.0.1:{port}", *QUICK], stderr=subprocess.STDOUT)
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    printed = []
    try:
        while not printed or not printed[-1].startswith("open http://"):
            printed.append(lines.get(timeout=300))  # the viewer starts once the outputs are written
        nodes, positions = served_scene(f"http://127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        proc.wait(timeout=60)
        reader.join(timeout=10)
    printed += list(lines.queue)
    assert proc.returncode == 0 and "viewer stopped\n" in printed, "".join(printed)
    assert f"exported {out / 'refined.splat'}\n" in printed

    # The splats are the refined PLY's (the file on disk): its centres and opacities, every Gaussian.
    refined = load_ply(out / "refined.ply")
    splats = nodes["/gaussians"]
    buffer = splats["buffer"].reshape(-1, 8)  # antimatter15's layout: xyz float32, unused, 6 float16, rgba
    assert len(buffer) == refined.count == json.loads((out / "metrics.json").read_text())["gaussians"]["after"]
    np.testing.assert_allclose(buffer[:, :3].view(np.float32) * splats["scale"], refined.means.numpy(), rtol=1e-6,
                               atol=1e-6)
    alpha = buffer[:, 7:].view(np.uint8)[:, 3]  # rgba bytes
    assert np.abs(alpha - refined.opacities.numpy() * 255).max() < 1.0 + 1e-3
    assert (out / "refined.splat").stat().st_size == 32 * refined.count

    # The cameras: every input and held-out view, at its pose in the scene's own frame, showing its image.
    scene = open_scene(scene_dir)
    protocol = json.loads((out / "metrics.json").read_text())["protocol"]
    roles = [("input", frame) for frame in protocol["inputs"]] + [("held-out", f) for f in protocol["targets"]]
    assert sorted(name for name in nodes if name.startswith("/cameras/")) == sorted(
        f"/cameras/{role}/{Path(frame).stem}" for role, frame in roles)
    indices = [scene.names.index(frame) for _, frame in roles]
    frames = scene.load_views(indices, size=(protocol["height"], protocol["width"]))[0].numpy()  # [F, H, W, 3]
    for (role, frame), index, truth in zip(roles, indices, frames):
        name = f"/cameras/{role}/{Path(frame).stem}"
        np.testing.assert_allclose(positions[name], scene.c2w[index, :3, 3].numpy(), atol=1e-5)
        shown = np.asarray(Image.open(io.BytesIO(nodes[name]["_image_data"])).convert("RGB"), np.float64) / 255
        errors = np.abs(shown - frames).mean((1, 2, 3))  # against every frame: its own is by far the closest
        assert errors.argmin() == indices.index(index) and errors.min() < 0.04, (name, errors)
        assert np.sort(errors)[1] > 2 * errors.min(), (name, errors)
