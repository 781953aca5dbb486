import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from model.gaussians import Gaussians
from model.ply import load_ply, save_ply

# The graphdeco 3DGS vertex layout for SH degree 3, written out independently of the code under test.
GRAPHDECO_DEGREE3 = (
    "x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 "
    + " ".join(f"f_rest_{i}" for i in range(45))
    + " opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3"
).split()


def make(n=64, k=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        torch.randn(n, 3, generator=g) * 10,
        torch.randn(n, 3, generator=g) - 4,
        torch.randn(n, 4, generator=g),
        torch.randn(n, generator=g) * 3,
        torch.randn(n, k, 3, generator=g),
    )


@pytest.mark.parametrize("k", [1, 4, 9, 16])
def test_round_trip_is_bit_exact(tmp_path, k):
    g = make(k=k)
    save_ply(g, tmp_path / "native.ply", sh_degree=None)
    save_ply(g, tmp_path / "padded.ply")
    native, padded = load_ply(tmp_path / "native.ply"), load_ply(tmp_path / "padded.ply")
    for name in ("means", "log_scales", "quats", "opacity_logits"):
        assert torch.equal(getattr(g, name), getattr(native, name)), name
        assert torch.equal(getattr(g, name), getattr(padded, name)), name
    assert torch.equal(native.sh, g.sh)
    assert padded.sh.shape == (g.count, 16, 3)  # degree 3 by default, the higher bands zero
    assert torch.equal(padded.sh[:, :k], g.sh) and not padded.sh[:, k:].any()


def test_sh_degree_can_only_be_padded(tmp_path):
    with pytest.raises(ValueError, match="padded up to 3"):
        save_ply(make(k=9), tmp_path / "g.ply", sh_degree=1)
    assert len(PlyData.read(str(save_ply(make(k=1), tmp_path / "g.ply", sh_degree=2)))["vertex"].properties) == 41


def graphdeco_load(path, max_sh_degree=3):
    """graphdeco's GaussianModel.load_ply, restated: fields found by name (f_rest_*, scale_*, rot*
    sorted by their number), the f_rest count asserted for the degree the model was built with, and
    f_rest read channel-major. Returns numpy arrays as graphdeco keeps them."""
    vertex = PlyData.read(str(path)).elements[0]
    xyz = np.stack([np.asarray(vertex[c]) for c in "xyz"], axis=1)
    opacities = np.asarray(vertex["opacity"])[..., None]
    features_dc = np.stack([np.asarray(vertex[f"f_dc_{i}"]) for i in range(3)], axis=1)[..., None]  # [N, 3, 1]

    def by_number(prefix):
        names = [p.name for p in vertex.properties if p.name.startswith(prefix)]
        return sorted(names, key=lambda name: int(name.split("_")[-1]))

    extra = by_number("f_rest_")
    assert len(extra) == 3 * (max_sh_degree + 1) ** 2 - 3
    features_extra = np.stack([np.asarray(vertex[n]) for n in extra], axis=1)
    features_extra = features_extra.reshape(len(xyz), 3, (max_sh_degree + 1) ** 2 - 1)  # [N, 3, K-1]
    scales = np.stack([np.asarray(vertex[n]) for n in by_number("scale_")], axis=1)
    rots = np.stack([np.asarray(vertex[n]) for n in by_number("rot")], axis=1)
    return xyz, features_dc, features_extra, opacities, scales, rots


def test_demo_checkpoint_ply_loads_as_graphdeco_degree_3(tmp_path):
    from data.procedural import generate_scene
    from model.pretrained import DEMO_CHECKPOINT, load_model
    from inference.demo import DEMO_CONFIG
    from model.cameras import Cameras
    from model.render import rasterize

    loaded = load_model(DEMO_CHECKPOINT)
    scene = generate_scene(DEMO_CONFIG.replace(num_frames=4, width=112, height=64))  # the checkpoint's size
    cams = Cameras(scene.intrinsics, scene.c2w, scene.images.shape[2], scene.images.shape[1])
    with torch.inference_mode():
        g = loaded.model(scene.images[None], cams.reshape(1, 4)).gaussians.scene(0)
    assert g.sh_degree < 3  # the demo network predicts a lower degree: the file pads it
    path = save_ply(g, tmp_path / "demo.ply")
    xyz, dc, extra, opacities, scales, rots = graphdeco_load(path)
    k = g.sh.shape[1]
    assert np.array_equal(xyz, g.means.numpy()) and np.array_equal(dc[..., 0], g.sh[:, 0].numpy())
    assert np.array_equal(extra.transpose(0, 2, 1)[:, : k - 1], g.sh[:, 1:].numpy())  # graphdeco's [N, 15, 3]
    assert not extra.transpose(0, 2, 1)[:, k - 1 :].any()
    assert np.array_equal(opacities[:, 0], g.opacity_logits.numpy())
    assert np.array_equal(scales, g.log_scales.numpy()) and np.array_equal(rots, g.quats.numpy())

    # The padded bands render nothing: degree 3 from the file equals the network's own degree.
    def render(gaussians, degree):
        colors, _, _ = rasterize(gaussians.means, gaussians.rotations, gaussians.scales, gaussians.opacities,
                                 gaussians.sh, cams.viewmats[:1], cams.Ks[:1], cams.width, cams.height,
                                 sh_degree=degree, backgrounds=torch.ones(1, 3), backend="cpu")
        return colors

    assert torch.allclose(render(load_ply(path), 3), render(g, g.sh_degree), atol=1e-5)


def test_field_names_order_and_conventions(tmp_path):
    n = 2
    sh = torch.zeros(n, 16, 3)
    sh[:, 0] = torch.tensor([1.0, 2.0, 3.0])
    sh[0, 1:, 0] = torch.arange(15.0)  # red channel of the 15 higher-order coefficients
    sh[0, 1:, 1] = 100 + torch.arange(15.0)
    g = Gaussians(
        means=torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        log_scales=torch.log(torch.tensor([[0.1, 0.2, 0.3]] * 2)),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2),
        opacity_logits=torch.tensor([0.0, 2.0]),
        sh=sh,
    )
    save_ply(g, tmp_path / "g.ply")
    v = PlyData.read(str(tmp_path / "g.ply"))["vertex"]
    assert [p.name for p in v.properties] == GRAPHDECO_DEGREE3
    assert all(str(p.val_dtype) in ("float32", "f4") for p in v.properties)
    # f_rest is channel-major: the first 15 are red, the next 15 green
    assert np.array_equal(np.array([v[f"f_rest_{i}"][0] for i in range(15)]), np.arange(15.0, dtype=np.float32))
    assert np.array_equal(np.array([v[f"f_rest_{i}"][0] for i in range(15, 30)]), 100 + np.arange(15.0, dtype=np.float32))
    # opacity stored as a logit: 0 means 50 % opacity; scales stored as logs; rotation wxyz
    assert v["opacity"][0] == 0.0 and abs(1 / (1 + np.exp(-v["opacity"][1])) - 0.8807971) < 1e-6
    assert np.allclose(np.exp([v["scale_0"][0], v["scale_1"][0], v["scale_2"][0]]), [0.1, 0.2, 0.3])
    assert v["rot_0"][0] == 1.0 and v["rot_1"][0] == 0.0
    # viewers turn f_dc into RGB = 0.5 + C0 * f_dc
    assert abs(0.5 + 0.28209479 * v["f_dc_1"][0] - (0.5 + 0.28209479 * 2.0)) < 1e-7
    assert (v["nx"] == 0).all()


def test_save_refuses_batches(tmp_path):
    g = make()
    batched = Gaussians.stack([g, g])
    with pytest.raises(ValueError, match="one scene"):
        save_ply(batched, tmp_path / "g.ply")


def _write_vertex(path, names, values):
    arr = np.empty(len(values), dtype=[(n, "f4") for n in names])
    for i, n in enumerate(names):
        arr[n] = values[:, i]
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no PLY file"):
        load_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"not a ply at all")
    with pytest.raises(ValueError, match="not a readable PLY"):
        load_ply(tmp_path / "junk.ply")
    names = GRAPHDECO_DEGREE3[:9] + [f"f_rest_{i}" for i in range(7)] + GRAPHDECO_DEGREE3[-8:]
    _write_vertex(tmp_path / "count.ply", names, np.zeros((3, len(names)), np.float32))
    with pytest.raises(ValueError, match="f_rest"):
        load_ply(tmp_path / "count.ply")
    names = [n for n in GRAPHDECO_DEGREE3 if n != "opacity"]
    _write_vertex(tmp_path / "missing_field.ply", names, np.zeros((3, len(names)), np.float32))
    with pytest.raises(ValueError, match="missing fields \\['opacity'\\]"):
        load_ply(tmp_path / "missing_field.ply")
    values = np.zeros((3, len(GRAPHDECO_DEGREE3)), np.float32)
    values[1, 2] = np.nan
    _write_vertex(tmp_path / "nan.ply", GRAPHDECO_DEGREE3, values)
    with pytest.raises(ValueError, match="NaN.*'z'"):
        load_ply(tmp_path / "nan.ply")
