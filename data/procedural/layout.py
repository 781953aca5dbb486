"""A scene's geometry and appearance: an axis-aligned room seen from inside plus objects in it.

World frame: y up, floor at y = 0, room centred on x = z = 0, metres. Objects are boxes (axis-aligned
or rotated; thin boxes serve as panels and pictures), spheres and vertical capped cylinders. Objects
are placed after the camera path and never come within the clearance of any camera, so cameras are
never inside or right in front of an object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .shading import Lights, random_lights
from .shapes import BOX, CYLINDER, SPHERE, bounding_radius
from .textures import Materials, random_material

ROOM_FACES = ("wall -x", "wall +x", "floor", "ceiling", "wall -z", "wall +z")  # order of intersect_room
_WALL_FACES = (0, 1, 4, 5)


@dataclass
class Layout:
    room_min: Tensor  # [3]
    room_max: Tensor  # [3]
    kinds: Tensor  # [P] int64: shapes.BOX, SPHERE or CYLINDER
    centres: Tensor  # [P, 3] world position of each object's local origin
    rotations: Tensor  # [P, 3, 3] world-to-local rotation: local = R @ (world - centre)
    sizes: Tensor  # [P, 3] box: half extents; sphere: radius in [0]; cylinder: radius [0], half height [1]
    materials: Materials  # 6 room faces (ROOM_FACES order), then one per object
    lights: Lights

    @property
    def num_objects(self) -> int:
        return len(self.kinds)

    @property
    def bounding_radius(self) -> Tensor:
        return bounding_radius(self.kinds, self.sizes)  # [P]

    @staticmethod
    def room_only(room_min, room_max, seed: int = 0) -> Layout:
        """An empty room [room_min, room_max] (each [3]) with random materials and lights."""
        rng = np.random.default_rng(seed)
        return _assemble(np.asarray(room_min, float), np.asarray(room_max, float), [], _room_materials(rng),
                         random_lights(rng))


def random_room(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Room corners (lo [3], hi [3]): 4-9 m wide and deep, 2.6-3.6 m high."""
    width, depth, height = rng.uniform(4.0, 9.0), rng.uniform(4.0, 9.0), rng.uniform(2.6, 3.6)
    return np.array([-width / 2, 0.0, -depth / 2]), np.array([width / 2, height, depth / 2])


def random_layout(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, cameras: np.ndarray,
                  num_objects: int, clearance: float, focus: np.ndarray | None = None) -> Layout:
    """Up to num_objects random objects in room [lo, hi], none within `clearance` of a camera position
    (cameras [V, 3]) or overlapping another object's bounding box. Fewer are placed when the room is full.
    With a focus point [3] (what an orbit looks at), the first object is tried there."""
    objects = []
    boxes = []  # world axis-aligned bounds (lo [3], hi [3]) of the placed objects
    for i in range(num_objects):
        for _attempt in range(60):
            obj = _random_object(rng, lo, hi, focus if i == 0 else None)
            b_lo, b_hi = obj["centre"] - obj["extent"], obj["centre"] + obj["extent"]
            if np.any(b_lo < lo - 1e-6) or np.any(b_hi > hi + 1e-6):
                continue
            near_camera = np.all((cameras > b_lo - clearance) & (cameras < b_hi + clearance), axis=-1)
            overlaps = any(np.all((b_lo < o_hi) & (b_hi > o_lo)) for o_lo, o_hi in boxes)
            if not near_camera.any() and not overlaps:
                objects.append(obj)
                boxes.append((b_lo, b_hi))
                break
    materials = _room_materials(rng) + [random_material(rng, "object") for _ in objects]
    return _assemble(lo, hi, objects, materials, random_lights(rng))


def _room_materials(rng: np.random.Generator) -> list[dict]:
    same_walls = rng.random() < 0.5
    wall = random_material(rng, "wall")
    faces = {2: random_material(rng, "floor"), 3: random_material(rng, "ceiling")}
    for f in _WALL_FACES:
        faces[f] = wall if same_walls else random_material(rng, "wall")
    return [faces[f] for f in range(6)]


def _rotation(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """Object-to-world rotation: pitch about local x, then yaw about world y."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_yaw @ r_pitch


def _random_object(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, near: np.ndarray | None) -> dict:
    """One object with its world bounding-box half extent `extent` [3], anywhere or within 0.3 m of `near`
    (horizontally); it may stick out of the room (the caller rejects it then)."""
    height = hi[1] - lo[1]
    kind_name = rng.choice(["box", "sphere", "cylinder", "panel"], p=[0.35, 0.2, 0.25, 0.2])
    xz = rng.uniform(lo, hi)[[0, 2]] if near is None else near[[0, 2]] + rng.uniform(-0.3, 0.3, 2)
    to_world = np.eye(3)
    if kind_name == "box":
        kind = BOX
        size = np.array([rng.uniform(0.2, 0.8), rng.uniform(0.2, min(1.0, height / 2)), rng.uniform(0.2, 0.8)])
        if rng.random() < 0.5:
            to_world = _rotation(rng.uniform(0, np.pi))
        y = size[1]
    elif kind_name == "sphere":
        kind = SPHERE
        r = rng.uniform(0.2, 0.6)
        size = np.array([r, r, r])
        y = r if rng.random() < 0.6 else rng.uniform(r, height - r)
    elif kind_name == "cylinder":
        kind = CYLINDER
        r = rng.uniform(0.1, 0.5)
        half = height / 2 if rng.random() < 0.2 else rng.uniform(0.2, min(1.3, height / 2))
        size = np.array([r, half, r])
        y = half
    else:  # a panel: a thin box, either a picture on a wall or a free-standing, maybe tilted, board
        kind = BOX
        size = np.array([rng.uniform(0.25, 1.0), rng.uniform(0.2, 0.75), rng.uniform(0.01, 0.02)])
        y = rng.uniform(0.6, height - 0.3)
        if rng.random() < 0.6:
            face = int(rng.choice(_WALL_FACES))
            axis, high = face // 2, face % 2
            to_world = _rotation({0: np.pi / 2, 1: -np.pi / 2, 4: 0.0, 5: np.pi}[face])
            xz[axis // 2] = (hi if high else lo)[axis] + (-1 if high else 1) * (size[2] + 0.005)
        else:
            to_world = _rotation(rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3))
    extent = np.abs(to_world) @ size if kind == BOX else size.copy()
    if kind == BOX:
        y = max(y, extent[1])  # tilted boxes rest on (not in) the floor
    centre = np.array([xz[0], y, xz[1]])
    return {"kind": kind, "centre": centre, "to_world": to_world, "size": size, "extent": extent}


def _assemble(lo: np.ndarray, hi: np.ndarray, objects: list[dict], materials: list[dict], lights: Lights) -> Layout:
    def t(x):
        return torch.tensor(np.asarray(x), dtype=torch.float32)

    return Layout(
        room_min=t(lo),
        room_max=t(hi),
        kinds=torch.tensor([o["kind"] for o in objects], dtype=torch.int64),
        centres=t([o["centre"] for o in objects]).reshape(-1, 3),
        rotations=t([o["to_world"].T for o in objects]).reshape(-1, 3, 3),
        sizes=t([o["size"] for o in objects]).reshape(-1, 3),
        materials=Materials.stack(materials),
        lights=lights,
    )
