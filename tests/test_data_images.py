"""Frame decoding: 16-bit and greyscale PNGs, EXIF orientation, refused pixel formats.

Oracles: a minimal PNG encoder written here (16-bit samples, which PIL cannot write in colour), the
EXIF specification's table of orientations expressed with numpy flips and rotations, and the
8-bit frames a scene was written with.
"""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from data.errors import SceneError
from data.images import decode_image, image_size
from data.open_scene import open_scene
from data.procedural import ProceduralConfig, generate_scene, write_dl3dv_scene
from data.scene import Scene

# What the stored pixels must become to show as the photographer saw them (EXIF 2.3, tag 0x0112).
UPRIGHT = {
    1: lambda a: a,
    2: np.fliplr,  # mirrored horizontally
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.rot90(np.fliplr(a), 1),  # mirrored, then turned 270 degrees clockwise
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise
    7: lambda a: np.rot90(np.fliplr(a), -1),
    8: lambda a: np.rot90(a, 1),
}


def png16(samples: np.ndarray, color_type: int) -> bytes:
    """A PNG of 16-bit big-endian samples [H, W, C] (colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA)."""
    h, w = samples.shape[:2]
    rows = samples.astype(">u2").reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def encoded(pixels: np.ndarray, fmt: str, orientation: int | None = None, **kwargs) -> bytes:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif, **kwargs)
    return buffer.getvalue()


SAMPLES = np.random.default_rng(0).integers(0, 65536, size=(5, 7, 3)).astype(np.uint16)  # [H, W, 3]


@pytest.mark.parametrize("color_type,channels", [(0, [0]), (2, [0, 1, 2]), (4, [0, 1]), (6, [0, 1, 2, 0])])
def test_sixteen_bit_pngs_keep_their_levels(color_type, channels):
    stored = SAMPLES[..., channels] if len(channels) > 1 else SAMPLES[..., 0]
    rgb = decode_image(png16(stored, color_type), "frame.png")  # [H, W, 3] uint8
    colour = SAMPLES[..., [0, 0, 0]] if color_type in (0, 4) else SAMPLES
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    assert np.abs(rgb.astype(float) - colour / 257).max() <= 1.0  # within one 8-bit level of v * 255 / 65535


def test_sixteen_bit_grey_is_not_white():
    ramp = np.linspace(0, 65535, 12).astype(np.uint16).reshape(3, 4)
    rgb = decode_image(png16(ramp, 0), "frame.png")
    assert np.array_equal(rgb[..., 0], np.rint(ramp / 257).astype(np.uint8))
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_eight_bit_grey_and_palette_decode_to_their_colours():
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    assert np.array_equal(decode_image(encoded(grey, "PNG"), "g.png"), np.repeat(grey[..., None], 3, -1))
    rgb = np.random.default_rng(1).integers(0, 4, size=(5, 7, 3)).astype(np.uint8) * 60  # 64 colours
    palette = Image.fromarray(rgb).quantize(colors=64, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert np.array_equal(decode_image(buffer.getvalue(), "p.png"), rgb)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_jpegs_upright(orientation):
    ramp = np.linspace(0, 255, 48 * 32 * 3).reshape(32, 48, 3)
    stored = np.clip(ramp + 40 * np.sin(np.arange(48) / 3)[None, :, None], 0, 255).astype(np.uint8)  # [H, W, 3]
    stored[:8, :8] = [255, 0, 0]  # a corner mark: any flip or turn moves it
    data = encoded(stored, "JPEG", orientation, quality=98)
    expected = UPRIGHT[orientation](stored)
    as_stored = decode_image(data, "f.jpg", upright=False)
    upright = decode_image(data, "f.jpg")
    assert upright.shape == expected.shape and image_size(data, "f.jpg") == expected.shape[:2]
    assert image_size(data, "f.jpg", upright=False) == (32, 48) and as_stored.shape == stored.shape
    assert np.abs(upright.astype(int) - expected).mean() < 2.0  # JPEG loss only
    if orientation != 1:  # the stored pixels are not what the tag says to show
        assert as_stored.shape != expected.shape or np.abs(as_stored.astype(int) - expected).mean() > 5


def test_unsupported_pixel_formats_are_refused():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.float32)).save(buffer, format="TIFF")
    with pytest.raises(SceneError, match="image f.tif has pixel format F"):
        decode_image(buffer.getvalue(), "f.tif")


@pytest.fixture(scope="module")
def frames_and_folder(tmp_path_factory):
    scene = generate_scene(ProceduralConfig.preset("tiny", seed=5, num_frames=3, width=48, height=32, shadows=False))
    root = tmp_path_factory.mktemp("scene")
    write_dl3dv_scene(scene, root)
    return root, sorted((root / "images_4").glob("*.png"))


def test_a_scene_of_sixteen_bit_grey_frames(frames_and_folder, tmp_path):
    root, frames = frames_and_folder
    original = open_scene(root).load_views(range(3))[0]  # [3, H, W, 3] from the 8-bit frames
    grey8 = np.stack([np.asarray(Image.open(f).convert("L")) for f in frames])  # [3, H, W]
    for frame, grey in zip(frames, grey8):
        frame.write_bytes(png16(grey.astype(np.uint16) * 257, 0))  # the same levels, 16 bits deep
    images, _ = open_scene(root).load_views(range(3))
    assert torch.allclose(images, torch.from_numpy(grey8 / 255.0).float()[..., None].expand(-1, -1, -1, 3), atol=1e-6)
    assert images.max() < 1.0 and (original - images).abs().max() > 0.05  # grey, and not white


def test_a_scene_of_rotated_photos_is_read_upright(frames_and_folder, tmp_path):
    """Portrait frames stored sideways with orientation 6, as phones write them: the camera file
    describes the displayed frames, so they must read back exactly as written."""
    root, frames = frames_and_folder
    upright = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in frames])  # [3, H, W, 3]
    for frame, pixels in zip(frames, upright):
        frame.write_bytes(encoded(np.ascontiguousarray(np.rot90(pixels, 1)), "PNG", orientation=6))
    scene = open_scene(root)
    images, cameras = scene.load_views(range(3))
    assert (cameras.width, cameras.height) == (48, 32)
    assert torch.equal(images, torch.from_numpy(upright / 255.0).float())
    # Where the cameras describe the stored pixels (COLMAP), the frames are read as stored.
    stored = Scene.from_frames("s", scene.names, scene.sources, scene.c2w, scene.intrinsics, upright=False)
    assert (stored.width, stored.height) == (32, 48)
    as_stored = torch.from_numpy(np.rot90(upright[0], 1) / 255.0).float()
    assert torch.equal(stored.subset([0]).load_views([0])[0][0], as_stored)
