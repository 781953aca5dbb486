"""The viewer in a real browser: headless Chromium (WebGL2 through SwiftShader) opens it on the demo
reconstruction, waits for the splats, jumps to an input camera with the panel's "Next" button and takes
a screenshot, which must match the project's own CPU render from that camera.

The viewer draws with viser's WebGL splatting (one colour per Gaussian, fragments below 1% alpha
discarded), not our rasterizer, so pixels differ; the comparison is on 8x8-pixel block means: their
correlation (structure) and PSNR (colour level). The test checks that the same thresholds reject a
blank page, swapped colour channels and wrong cameras (our render from them).

    SAVE_VIEWER_SCREENSHOT=docs/viewer.png python -m pytest tests/test_view_browser.py   # the README picture
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from headless_chromium import CHROMIUM, Browser
from PIL import Image

from inference import infer
from inference.reconstruct import render_views
from model.cameras import Cameras
from view.reconstruction import open_reconstruction
from view.server import Viewer

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install chromium (Debian)")

SCALE = 4  # the browser canvas is 4x the reconstruction's resolution (448x256 for the demo)
BLOCK = 8
MIN_CORRELATION = 0.85
MIN_PSNR = 20.0


def block_means(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // BLOCK, image.shape[1] // BLOCK
    return image[:h * BLOCK, :w * BLOCK].astype(np.float64).reshape(h, BLOCK, w, BLOCK, 3).mean((1, 3)) / 255


def similarity(image: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(correlation, PSNR in dB) of 8x8 block means; each channel centred on its own mean."""
    a, b = block_means(image), block_means(reference)
    psnr = -10 * np.log10(np.mean((a - b) ** 2))
    a, b = a - a.mean((0, 1)), b - b.mean((0, 1))
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return (float((a * b).sum() / norm) if norm > 0 else 0.0), float(psnr)


def passes(image: np.ndarray, reference: np.ndarray) -> bool:
    correlation, psnr = similarity(image, reference)
    return correlation >= MIN_CORRELATION and psnr >= MIN_PSNR


def render(rec, c2w: torch.Tensor, index: int) -> np.ndarray:
    """Our CPU render, at the browser canvas's size, of camera `index`'s intrinsics at pose c2w [4, 4]."""
    cam = rec.cameras[index]
    intrinsics = torch.tensor([[cam.fx, cam.fy, cam.cx, cam.cy]]) * SCALE
    image = render_views(rec.gaussians, Cameras(intrinsics, c2w[None].float(), cam.width * SCALE,
                                                cam.height * SCALE), "cpu", "reference")[0]
    return (image.clamp(0, 1) * 255).round().byte().numpy()


def canvas_rect(browser: Browser) -> dict:
    rect = json.loads(browser.evaluate("JSON.stringify(document.querySelector('canvas').getBoundingClientRect())"))
    return {key: rect[key] for key in ("x", "y", "width", "height")}


def settled_screenshot(browser: Browser, clip: dict, timeout: float = 40) -> np.ndarray:
    """The canvas once the splats have arrived, been sorted and faded in: two equal, non-blank frames."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        shot = browser.screenshot(clip)
        if previous is not None and shot.std() > 2 and np.abs(shot.astype(int) - previous).max() <= 2:
            return shot
        previous = shot.astype(int)
        time.sleep(0.3)
    raise TimeoutError("the viewer's canvas did not settle on a non-blank picture")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert infer.main(["--out", str(out), "--no-lpips"]) == 0
    return out


def test_browser_shows_the_reconstruction_from_an_input_camera(demo):
    rec = open_reconstruction(demo)
    target = 1  # the second input camera: reached with one press of "Next"
    cam = rec.cameras[target]
    width, height = cam.width * SCALE, cam.height * SCALE
    viewer = Viewer(rec, host="127.0.0.1", port=0)
    browser = Browser(1000, 600)
    try:
        browser.open(viewer.url, 1000, 600)
        # SwiftShader makes viser show a "software rendering" notice over the canvas: close it
        browser.wait_for("document.querySelector('.mantine-Notification-closeButton') !== null", 30, "the page")
        browser.evaluate("document.querySelector('.mantine-Notification-closeButton').click()")
        # the panel docks on the right; then size the window so the canvas has the camera's size
        browser.wait_for("document.querySelector('canvas').getBoundingClientRect().width < 1000", 30, "the panel")
        panel = 1000 - canvas_rect(browser)["width"]
        browser.resize(width + round(panel), height)
        browser.wait_for(f"(r => r.width === {width} && r.height === {height})"
                         "(document.querySelector('canvas').getBoundingClientRect())", 30, "the resized canvas")
        viewer.show_cameras.value = False  # frustums of neighbouring cameras would cover the view
        next_button = "Array.from(document.querySelectorAll('button')).find(b => b.textContent === 'Next')"
        browser.wait_for(f"{next_button} !== undefined", 30, "the camera panel")
        browser.evaluate(f"{next_button}.click()")

        client = next(iter(viewer.server.get_clients().values()))
        c2w = torch.from_numpy(cam.c2w)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (np.allclose(client.camera.position, cam.c2w[:3, 3], atol=1e-4)
                                                   and client.camera.image_width == width):
            time.sleep(0.1)
        # the browser reports its camera back: the pose, vertical fov and canvas size we asked for
        import viser.transforms as tf

        np.testing.assert_allclose(client.camera.position, cam.c2w[:3, 3], atol=1e-4)
        np.testing.assert_allclose(tf.SO3(client.camera.wxyz).as_matrix(), cam.c2w[:3, :3], atol=1e-4)
        assert client.camera.fov == pytest.approx(cam.fov_y, rel=1e-5)
        clip = canvas_rect(browser)
        assert (clip["width"], clip["height"]) == (width, height)
        assert (client.camera.image_width, client.camera.image_height) == (width, height)

        shot = settled_screenshot(browser, clip)
        reference = render(rec, c2w, target)
        correlation, psnr = similarity(shot, reference)
        print(f"browser vs CPU render: correlation {correlation:.3f}, PSNR {psnr:.2f} dB (8x8 block means)")
        assert correlation >= MIN_CORRELATION and psnr >= MIN_PSNR, (correlation, psnr)

        # the same thresholds reject what a broken viewer would show
        centres = np.stack([c.c2w[:3, 3] for c in rec.cameras if c.role == "input"])
        farthest = int(np.argmax(np.linalg.norm(centres - cam.c2w[:3, 3], axis=1)))
        flipped = c2w.clone()
        flipped[:3, 1:3] *= -1  # OpenGL axes taken for OpenCV: looking backwards
        rolled = c2w.clone()
        rolled[:3, :2] *= -1  # upside down
        wrong = {"a blank page": np.full_like(shot, 255), "red and blue swapped": shot[..., ::-1],
                 "red and green swapped": shot[..., [1, 0, 2]],
                 "the farthest input camera": render(rec, torch.from_numpy(rec.cameras[farthest].c2w), farthest),
                 "the camera looking backwards": render(rec, flipped, target),
                 "the camera upside down": render(rec, rolled, target)}
        for name, image in wrong.items():
            assert not passes(image, reference), f"{name} would pass: {similarity(image, reference)}"

        save = os.environ.get("SAVE_VIEWER_SCREENSHOT")
        if save:
            viewer.show_cameras.value = True
            browser.resize(960, 400)
            with viewer.server.atomic():  # step back along the view to see the frustums too
                client.camera.position = cam.c2w[:3, 3] - 0.5 * viewer.look_distances[target] * cam.c2w[:3, 2]
            time.sleep(1)
            page = settled_screenshot(browser, {"x": 0, "y": 0, "width": 960, "height": 400})
            Image.fromarray(page).quantize(256, method=Image.Quantize.MEDIANCUT).save(Path(save), optimize=True)
    finally:
        browser.close()
        viewer.stop()
