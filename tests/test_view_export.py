"""The .splat and compressed-PLY exports, read back by readers written here from the published layouts
(antimatter15's splat viewer; the PlayCanvas engine's compressed-PLY decoder), not by the writer's code."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from model.gaussians import SH_C0, Gaussians
from model.ply import save_ply
from view.export import COMPRESSED_MIN_OPACITY, export, main, parse_formats

SPACING = 0.25  # lattice spacing of the test Gaussians: decoded positions are matched back by rounding


def lattice_gaussians(sh_degree: int, n_side: int = 12, seed: int = 0) -> Gaussians:
    """n_side^3 Gaussians on a jittered lattice (so each decoded one is matched to its original), with
    varied scales, rotations, colours, opacities and SH."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack(torch.meshgrid(*[torch.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3).float()
    n = len(idx)
    means = (idx + 0.2 * (torch.rand(n, 3, generator=g) - 0.5)) * SPACING - 1.0
    k = (sh_degree + 1) ** 2
    return Gaussians(means=means, log_scales=torch.rand(n, 3, generator=g) * 4 - 6,
                     quats=torch.randn(n, 4, generator=g) * torch.rand(n, 1, generator=g) * 3,
                     opacity_logits=torch.randn(n, generator=g) * 3, sh=torch.randn(n, k, 3, generator=g) * 0.8)


def match(decoded_means: np.ndarray, g: Gaussians) -> np.ndarray:
    """Index into g of each decoded Gaussian, from its lattice cell."""
    n_side = round(g.count ** (1 / 3))
    cell = np.round((decoded_means + 1.0) / SPACING).astype(int)
    assert (cell >= 0).all() and (cell < n_side).all()
    index = (cell[:, 0] * n_side + cell[:, 1]) * n_side + cell[:, 2]
    assert len(np.unique(index)) == len(index), "two decoded Gaussians fell in one lattice cell"
    return index


def same_rotation(decoded: np.ndarray, original: torch.Tensor, atol: float) -> None:
    """Unit quaternions equal up to sign (q and -q are the same rotation)."""
    q = torch.nn.functional.normalize(original, dim=-1).numpy()
    assert np.abs(np.abs((decoded * q).sum(1)) - 1).max() < atol


# --- antimatter15 .splat: 32 bytes per Gaussian -----------------------------------------------------------

def read_splat(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    assert len(raw) % 32 == 0
    rows = np.frombuffer(raw, dtype=np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4),
                                              ("rot", "u1", 4)]))
    return {"means": rows["position"].astype(np.float64), "scales": rows["scale"].astype(np.float64),
            "rgb": rows["rgba"][:, :3] / 255, "opacity": rows["rgba"][:, 3] / 255,
            "quats": (rows["rot"].astype(np.float64) - 128) / 128}  # w, x, y, z


def test_splat_round_trip(tmp_path):
    g = lattice_gaussians(sh_degree=2)
    (path,) = export(g, tmp_path / "scene", ["splat"])
    assert path.name == "scene.splat" and path.stat().st_size == 32 * g.count
    d = read_splat(path)
    i = match(d["means"], g)
    assert sorted(i) == list(range(g.count))
    np.testing.assert_array_equal(d["means"], g.means[i].numpy())  # float32, exact
    np.testing.assert_allclose(d["scales"], g.scales[i].numpy(), rtol=1e-6)  # linear scales
    rgb = (0.5 + SH_C0 * g.sh[i, 0]).clamp(0, 1).numpy()  # degree-0 colour
    assert np.abs(d["rgb"] - rgb).max() <= 1 / 255 + 1e-6
    assert np.abs(d["opacity"] - g.opacities[i].numpy()).max() <= 1 / 255 + 1e-6
    unit = d["quats"] / np.linalg.norm(d["quats"], axis=1, keepdims=True)
    same_rotation(unit, g.quats[i], atol=2e-3)


# --- PlayCanvas compressed PLY ------------------------------------------------------------------------------

def read_compressed_ply(path: Path) -> dict[str, np.ndarray]:
    """Header, then chunk floats, packed vertex uint32s and optional SH bytes, as the engine reads them."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\n")
    elements = re.findall(r"element (\w+) (\d+)\n((?:property \w+ \w+\n)*)", header)
    layout = {name: (int(count), re.findall(r"property (\w+) (\w+)", props)) for name, count, props in elements}
    n_chunks, chunk_props = layout["chunk"]
    n, vertex_props = layout["vertex"]
    assert [p for _, p in chunk_props] == ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z", "min_scale_x",
                                           "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z",
                                           "min_r", "min_g", "min_b", "max_r", "max_g", "max_b"]
    assert vertex_props == [("uint", "packed_position"), ("uint", "packed_rotation"), ("uint", "packed_scale"),
                            ("uint", "packed_color")]
    assert n_chunks == -(-n // 256)
    sh_props = layout.get("sh", (n, []))[1]
    assert all(t == "uchar" for t, _ in sh_props)
    offset = end
    chunks = np.frombuffer(raw, "<f4", n_chunks * 18, offset).reshape(n_chunks, 18).astype(np.float64)
    offset += chunks.size * 4
    packed = np.frombuffer(raw, "<u4", n * 4, offset).reshape(n, 4).astype(np.int64)
    offset += packed.size * 4
    sh = np.frombuffer(raw, "u1", n * len(sh_props), offset).reshape(n, len(sh_props)).astype(np.float64)
    assert offset + sh.size == len(raw)
    c = chunks[np.arange(n) // 256]  # each Gaussian's chunk

    def unorm(value, shift, bits):
        return ((value >> shift) & ((1 << bits) - 1)) / ((1 << bits) - 1)

    def lerp(lo, hi, t):
        return lo * (1 - t) + hi * t

    def unpack_111011(value):
        return np.stack([unorm(value, 21, 11), unorm(value, 11, 10), unorm(value, 0, 11)], 1)

    means = lerp(c[:, 0:3], c[:, 3:6], unpack_111011(packed[:, 0]))
    log_scales = lerp(c[:, 6:9], c[:, 9:12], unpack_111011(packed[:, 2]))
    color = np.stack([unorm(packed[:, 3], s, 8) for s in (24, 16, 8, 0)], 1)
    rgb = lerp(c[:, 12:15], c[:, 15:18], color[:, :3])
    # rotation: 2 bits = index of the largest component, then the other three (in order) as 10-bit unorms
    # of v * sqrt(2)/2 + 0.5; the largest is recovered as sqrt(1 - sum of squares)
    rot = packed[:, 1]
    rest = (np.stack([unorm(rot, 20, 10), unorm(rot, 10, 10), unorm(rot, 0, 10)], 1) - 0.5) / (np.sqrt(2) / 2)
    largest = rot >> 30
    quats = np.zeros((n, 4))
    for j in range(4):
        rows = largest == j
        others = [k for k in range(4) if k != j]
        quats[np.ix_(rows, others)] = rest[rows]
        quats[rows, j] = np.sqrt(np.clip(1 - (rest[rows] ** 2).sum(1), 0, None))
    return {"means": means, "log_scales": log_scales, "rgb": rgb, "opacity": color[:, 3], "quats": quats,
            "chunks": chunks, "f_rest": sh * 8 / 255 - 4}


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_compressed_ply_round_trip(tmp_path, sh_degree):
    g = lattice_gaussians(sh_degree)
    (path,) = export(g, tmp_path / "scene", ["compressed-ply"])
    assert path.name == "scene.compressed.ply"
    d = read_compressed_ply(path)
    i = match(d["means"], g)
    kept = (g.opacities > COMPRESSED_MIN_OPACITY).numpy()
    assert sorted(i) == list(np.nonzero(kept)[0])  # every Gaussian above 1/255 opacity, once
    # quantisation steps: per chunk, 11 or 10 bits of the chunk's range; half a step after rounding
    chunk = np.arange(len(i)) // 256
    extent = d["chunks"][chunk, 3:6] - d["chunks"][chunk, 0:3]
    step = extent / np.array([2047, 1023, 2047])
    assert (np.abs(d["means"] - g.means[i].numpy()) <= step / 2 + 1e-6).all()
    # chunks are spatially coherent (Morton order): a typical chunk spans a small part of the scene's volume
    volume = np.prod(d["chunks"][:, 3:6] - d["chunks"][:, 0:3], axis=1) / np.prod((g.means.amax(0) - g.means.amin(0)).numpy())
    assert np.median(volume) < 0.3
    scale_step = (d["chunks"][chunk, 9:12] - d["chunks"][chunk, 6:9]) / np.array([2047, 1023, 2047])
    assert (np.abs(d["log_scales"] - g.log_scales[i].numpy()) <= scale_step / 2 + 1e-5).all()
    rgb = (0.5 + SH_C0 * g.sh[i, 0]).numpy()
    rgb_step = (d["chunks"][chunk, 15:18] - d["chunks"][chunk, 12:15]) / 255
    assert (np.abs(d["rgb"] - rgb) <= rgb_step / 2 + 1e-5).all()
    assert np.abs(d["opacity"] - g.opacities[i].numpy()).max() <= 0.5 / 255 + 1e-6
    same_rotation(d["quats"], g.quats[i], atol=2e-3)
    k = (sh_degree + 1) ** 2 - 1
    assert d["f_rest"].shape == (len(i), 3 * k)
    if k:  # graphdeco order (channel-major), 8 bits over [-4, 4]: within one step plus the writer's bias
        rest = g.sh[i, 1:].transpose(1, 2).reshape(len(i), -1).numpy()
        assert np.abs(d["f_rest"] - rest.clip(-4, 4)).max() <= 2 * 8 / 255


def test_command_writes_both_beside_the_ply_and_never_overwrites(tmp_path, capsys):
    g = lattice_gaussians(sh_degree=1, n_side=6)
    save_ply(g, tmp_path / "gaussians.ply")
    assert main([str(tmp_path / "gaussians.ply")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "gaussians.splat").stat().st_size == 32 * g.count
    assert (tmp_path / "gaussians.compressed.ply").is_file() and "gaussians.compressed.ply" in out
    before = (tmp_path / "gaussians.splat").read_bytes()
    (tmp_path / "gaussians.splat").write_bytes(b"mine")
    assert main([str(tmp_path / "gaussians.ply"), "--format", "splat"]) == 2
    assert "already exist" in capsys.readouterr().err and (tmp_path / "gaussians.splat").read_bytes() == b"mine"
    assert main([str(tmp_path / "gaussians.ply"), "--format", "splat", "--overwrite"]) == 0
    assert (tmp_path / "gaussians.splat").read_bytes() == before


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    (tmp_path / "notes.ply").write_text("not a ply")
    save_ply(lattice_gaussians(0, n_side=2), tmp_path / "ok.ply")
    (tmp_path / "afile").write_text("x")
    cases = [([str(tmp_path / "missing.ply")], "no PLY file"),
             ([str(tmp_path / "notes.ply")], "not a readable PLY"),
             ([str(tmp_path / "ok.ply"), "--format", "jpeg"], "unknown export format"),
             ([str(tmp_path / "ok.ply"), "--out", str(tmp_path / "afile")], "is a file")]
    for args, fragment in cases:
        assert main(args) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, lines)


def test_parse_formats():
    assert parse_formats("compressed-ply, splat,splat") == ["compressed-ply", "splat"]
    with pytest.raises(ValueError, match="unknown export format"):
        parse_formats(",")


def test_empty_reconstruction_is_refused(tmp_path):
    g = lattice_gaussians(0, n_side=2).index(torch.zeros(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="no Gaussians"):
        export(g, tmp_path / "empty", ["splat"])
    assert not list(tmp_path.iterdir())
