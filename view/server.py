"""The viser server: Gaussians rendered in the browser, camera frustums with their images, camera jumps.

The machine serving the page needs no GPU: viser sends the splats once and the browser sorts and
draws them with WebGL. Cameras follow viser's convention, which is ours: OpenCV axes (x right, y down,
z forward), `wxyz` and `position` of the camera-to-world transform, vertical field of view. A jump puts
the browser's camera exactly at a reconstruction camera (its pose and vertical field of view; the image
then fills the window when the window has the camera's aspect).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .reconstruction import Reconstruction, ViewCamera, cap_by_opacity, open_reconstruction
from .splats import splat_arrays

DEFAULT_MAX_GAUSSIANS = 1_000_000
THUMBNAIL_WIDTH = 320  # frustum images are sent at most this wide
COLORS = {"input": (40, 110, 220), "held-out": (235, 120, 30)}


@dataclass
class Summary:
    shown: int
    total: int
    dropped_below: float  # opacity at or below which Gaussians were left out (0 when none were)
    cameras: dict[str, int]

    def lines(self) -> list[str]:
        out = [f"{self.shown:,} Gaussians shown" + (f" of {self.total:,}" if self.shown < self.total else "")]
        if self.shown < self.total:
            out.append(f"left out: the {self.total - self.shown:,} least opaque (opacity <= {self.dropped_below:.3g}); "
                       "raise --max-gaussians to show more")
        out.append(", ".join(f"{n} {role} cameras" for role, n in self.cameras.items()) if self.cameras
                   else "no cameras.json next to the PLY: showing the Gaussians only")
        return out


def check_port(host: str, port: int, option: str = "--port") -> None:
    """Fail with one clear message, before any work, when the viewer could not listen on host:port.

    option: how the user chose the address, for the advice: --port PORT (python -m view) or
    --view [HOST:]PORT (the commands that show their result).
    """
    def use(free: int) -> str:
        return f"--port {free}" if option == "--port" else f"{option} {host}:{free}"

    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (0-65535); pass e.g. {use(8080)}")
    try:
        _bind(host, port)
    except socket.gaierror as err:
        raise ValueError(f"--host {host} is not a valid address ({err.strerror})") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is already in use (another viewer?); pass "
                             f"{use(_free_port(host, port + 1))}, which is free") from None
        if err.errno == errno.EACCES:
            raise ValueError(f"port {port} needs administrator rights; pass a port above 1023, "
                             f"e.g. {use(_free_port(host, 8080))}") from None
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror}); use --host 127.0.0.1 or an "
                         "address of this machine") from None


def parse_address(text: str) -> tuple[str, int]:
    """'[HOST:]PORT' -> (host, port); the host defaults to this machine only (127.0.0.1)."""
    host, _, port = text.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise ValueError(f"expected [HOST:]PORT such as 8080 or 0.0.0.0:8080, got {text!r}") from None


def _bind(host: str, port: int) -> int:
    """Bind and release host:port the way the server will (SO_REUSEADDR); returns the bound port."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        return sock.getsockname()[1]


def _free_port(host: str, start: int) -> int:
    for port in range(start, min(start + 100, 65536)):
        try:
            return _bind(host, port)
        except OSError:
            continue
    return _bind(host, 0)


def _look_distance(camera: ViewCamera, means: torch.Tensor) -> float:
    """Median depth of the Gaussians in front of the camera: where the orbit centre goes after a jump."""
    c2w = torch.from_numpy(camera.c2w).float()
    depth = (means - c2w[:3, 3]) @ c2w[:3, 2]  # [n]
    ahead = depth[depth > 0]
    return float(ahead.median()) if len(ahead) else 1.0


def _thumbnail(image: np.ndarray | None) -> np.ndarray | None:
    if image is None or image.shape[1] <= THUMBNAIL_WIDTH:
        return image
    height = max(1, round(image.shape[0] * THUMBNAIL_WIDTH / image.shape[1]))
    return np.asarray(Image.fromarray(image).resize((THUMBNAIL_WIDTH, height), Image.BILINEAR))


class Viewer:
    """A running viser server showing one reconstruction; `stop()` ends it."""

    def __init__(self, reconstruction: Reconstruction, host: str = "127.0.0.1", port: int = 8080,
                 max_gaussians: int = DEFAULT_MAX_GAUSSIANS):
        import viser
        import viser.transforms as tf

        if max_gaussians < 1:
            raise ValueError(f"--max-gaussians must be at least 1, got {max_gaussians}")
        check_port(host, port)
        g = reconstruction.gaussians
        shown, dropped_below = cap_by_opacity(g, max_gaussians)
        self.cameras = reconstruction.cameras
        roles = [c.role for c in self.cameras]
        self.summary = Summary(shown.count, g.count, dropped_below,
                               {role: roles.count(role) for role in COLORS if role in roles})
        inputs = [c for c in self.cameras if c.role == "input"] or self.cameras
        centres = torch.tensor(np.stack([c.c2w[:3, 3] for c in inputs]), dtype=torch.float32) if inputs else None
        splats = splat_arrays(shown, centres)

        sample = shown.means[torch.randperm(shown.count, generator=torch.Generator().manual_seed(0))[:100_000]]
        self.look_distances = [_look_distance(c, sample) for c in self.cameras]
        centre = sample.median(0).values.numpy().astype(np.float64)
        extent = float((sample - sample.median(0).values).norm(dim=1).quantile(0.9)) or 1.0
        typical = float(np.median(self.look_distances)) if self.cameras else extent
        self.near, self.far = 1e-3 * typical, 1e4 * typical

        logging.getLogger("websockets.server").setLevel(logging.CRITICAL)  # browsers' aborted pre-connections
        self.server = viser.ViserServer(host=host, port=port, label=f"longlrm-splat: {reconstruction.ply.name}",
                                        verbose=False)
        self.host, self.port = host, self.server.get_port()
        server = self.server
        server.gui.configure_theme(show_share_button=False)
        server.gui.main_panel.dock_right()
        if inputs:
            up = -np.mean([c.c2w[:3, 1] for c in inputs], axis=0)
            server.scene.set_up_direction(tuple(up / np.linalg.norm(up)))
        else:
            server.scene.set_up_direction("-y")  # OpenCV / COLMAP world frames usually have y down
        server.scene.add_gaussian_splats("/gaussians", centers=splats.centers, covariances=splats.covariances,
                                         rgbs=splats.rgbs, opacities=splats.opacities, scale=1.0 / splats.scale)

        frustum_scale = 0.1 * typical
        self._frustums = []
        for i, cam in enumerate(self.cameras):
            frustum = server.scene.add_camera_frustum(
                f"/cameras/{cam.role}/{cam.name}", fov=cam.fov_y, aspect=cam.width / cam.height,
                scale=frustum_scale, thickness=1.5, thickness_units="screen", color=COLORS[cam.role],
                image=_thumbnail(cam.image), wxyz=tf.SO3.from_matrix(cam.c2w[:3, :3]).wxyz, position=cam.c2w[:3, 3])
            frustum.on_click(lambda event, i=i: self._select(event.client, i))
            self._frustums.append(frustum)

        initial = server.initial_camera
        initial.near, initial.far = self.near, self.far
        if self.cameras:
            cam = self.cameras[0]
            initial.fov = cam.fov_y
            initial.position = cam.c2w[:3, 3]
            initial.look_at = cam.c2w[:3, 3] + cam.c2w[:3, 2] * self.look_distances[0]
            initial.up = -cam.c2w[:3, 1]
        else:
            initial.look_at = centre
            initial.position = centre + 2 * extent * np.array([0.0, -0.5, -1.0])

        server.gui.add_markdown("\n\n".join(self.summary.lines()))
        if self.cameras:
            self.show_cameras = server.gui.add_checkbox("Show cameras", initial_value=True)

            self._looking_through: dict[int, int] = {}  # client id -> camera index it jumped to

            @self.show_cameras.on_update
            def _(_) -> None:
                self._update_frustums()

            self._camera_labels = [f"{c.role} {sum(d.role == c.role for d in self.cameras[:i]) + 1}: {c.name}"
                                   for i, c in enumerate(self.cameras)]
            self._dropdowns: dict[int, object] = {}
            server.on_client_connect(self._add_camera_controls)
            server.on_client_disconnect(self._forget_client)

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def _add_camera_controls(self, client) -> None:
        """Per browser tab: choosing a camera moves that tab's view only."""
        with client.gui.add_folder("Cameras"):
            dropdown = client.gui.add_dropdown("Camera", self._camera_labels)
            step = client.gui.add_button_group("Step", ["Previous", "Next"])
        self._dropdowns[client.client_id] = dropdown
        self._looking_through[client.client_id] = 0  # new tabs start at the first camera
        self._update_frustums()

        @dropdown.on_update
        def _(_) -> None:
            self.go_to(client, self._camera_labels.index(dropdown.value))

        @step.on_click
        def _(_) -> None:
            current = self._camera_labels.index(dropdown.value)
            delta = 1 if step.value == "Next" else -1
            dropdown.value = self._camera_labels[(current + delta) % len(self._camera_labels)]

    def _forget_client(self, client) -> None:
        self._dropdowns.pop(client.client_id, None)
        self._looking_through.pop(client.client_id, None)
        self._update_frustums()

    def _update_frustums(self) -> None:
        """Frustums follow "Show cameras", except the ones being looked through: their image would fill
        the view."""
        hidden = set(self._looking_through.values())
        for i, frustum in enumerate(self._frustums):
            frustum.visible = self.show_cameras.value and i not in hidden

    def go_to(self, client, index: int) -> None:
        """Put `client`'s view exactly at camera `index`: its position, orientation and vertical fov."""
        cam = self.cameras[index]
        rot, position = cam.c2w[:3, :3], cam.c2w[:3, 3]
        with client.atomic():
            client.camera.up_direction = -rot[:, 1]
            client.camera.position = position
            client.camera.look_at = position + rot[:, 2] * self.look_distances[index]
            client.camera.fov = cam.fov_y
            client.camera.near, client.camera.far = self.near, self.far
        self._looking_through[client.client_id] = index
        self._update_frustums()

    def _select(self, client, index: int) -> None:
        """A clicked frustum: jump there and show it in the tab's camera list."""
        dropdown = self._dropdowns.get(client.client_id)
        if dropdown is None or dropdown.value == self._camera_labels[index]:
            self.go_to(client, index)
        else:
            dropdown.value = self._camera_labels[index]  # its update jumps

    def stop(self) -> None:
        self.server.stop()


def serve(path: Path, host: str = "127.0.0.1", port: int = 8080,
          max_gaussians: int = DEFAULT_MAX_GAUSSIANS) -> None:
    """Show the reconstruction at `path` (a PLY or a folder holding one) until Ctrl+C."""
    check_port(host, port)
    viewer = Viewer(open_reconstruction(Path(path)), host, port, max_gaussians)
    print(f"viewer: {viewer.summary.lines()[0]} from {path}")
    for line in viewer.summary.lines()[1:]:
        print(f"  {line}")
    print(f"open {viewer.url} in a browser (Ctrl+C stops the viewer)")
    if host in ("127.0.0.1", "localhost", "::1"):
        print(f"  from another machine: ssh -L {viewer.port}:localhost:{viewer.port} THIS_MACHINE, "
              "or serve on the network with --host 0.0.0.0")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("viewer stopped")
    finally:
        viewer.stop()
