"""A small numpy ray caster that draws Shapes3D-like scenes, fast enough to feed training.

The scene is the one of `3dshapes.h5`: a floor, the inside corner of a room (two walls of one hue,
lit differently) and an object (cube, cylinder, sphere or capsule) standing on the floor in the
middle. The orientation factor orbits the camera around the object, so the wall corner slides across
the view and the faces of the cube turn; the scale factor resizes the object.

Speed comes from the structure of the factors: the three hues only colour the picture, so the
geometry (scale x shape x orientation = 480 combinations) is ray cast once, with 4x4 supersampling,
into three per-pixel weight maps (floor, walls, object: coverage x shading, shadows included). An
image is then one small matrix product: `weights (H*W, 3) @ colours (3, RGB)`.

Example:
    >>> renderer = Shapes3DRenderer(image_size=64)
    >>> images = renderer.render(floor_hue=[0.0], wall_hue=[0.5], object_hue=[0.2],
    ...                          scale=[1.0], shape=[0], orientation=[15.0])
    >>> images.shape, images.dtype
    ((1, 64, 64, 3), dtype('float32'))
"""
from __future__ import annotations

import colorsys
import functools
from typing import Sequence

import numpy as np

from .checks import check_positive_int

SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")

_LIGHT = np.array([-0.45, 1.0, 0.75]) / np.linalg.norm([-0.45, 1.0, 0.75])
_AMBIENT = {"floor": 0.50, "wall": 0.42, "object": 0.38}
_DIFFUSE = {"floor": 0.50, "wall": 0.60, "object": 0.66}
_SHADOW = 0.55  # fraction of the direct light a shadowed point still receives (soft room light)
_CORNER_DISTANCE = 6.0  # how far behind the object the room corner stands
_CAMERA_DISTANCE = 10.0
_CAMERA_HEIGHT = 3.6
_LOOK_AT = np.array([0.0, 2.2, 0.0])
_FOCAL = 2.0  # focal length in units of half the image width (about 53 degrees field of view)
_SATURATION = 0.85
_OBJECT_SIZE = 1.25  # world size of a scale-1.0 object


def hue_to_rgb(hue: float) -> np.ndarray:
    """A Shapes3D hue label in [0, 1) -> saturated RGB in [0, 1]."""
    return np.asarray(colorsys.hsv_to_rgb(float(hue) % 1.0, _SATURATION, 1.0), dtype=np.float32)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of (N, 3) / (3,) arrays (a (3,) . (3,) gives a scalar)."""
    if a.ndim == 1 and b.ndim == 1:
        return a @ b
    if a.ndim == 1:
        return b @ a
    if b.ndim == 1:
        return a @ b
    return np.einsum("ij,ij->i", a, b)


# -- ray / object intersections (vectorised over rays: origins (N, 3) or (3,), directions (N, 3)) --
def _intersect_box(o, d, half: float, height: float):
    lo = np.array([-half, 0.0, -half])
    hi = np.array([half, height, half])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (lo - o) * inv
        t2 = (hi - o) * inv
    tnear = np.minimum(t1, t2)
    tfar = np.maximum(t1, t2)
    tnear = np.where(np.isnan(tnear), -np.inf, tnear)
    tfar = np.where(np.isnan(tfar), np.inf, tfar)
    t_in = np.maximum(np.maximum(tnear[:, 0], tnear[:, 1]), tnear[:, 2])
    t_out = np.minimum(np.minimum(tfar[:, 0], tfar[:, 1]), tfar[:, 2])
    hit = (t_out >= t_in) & (t_in > 1e-6)
    axis = tnear.argmax(axis=1)
    normal = np.zeros_like(d)
    rows = np.arange(len(d))
    normal[rows, axis] = -np.sign(d[rows, axis])
    return np.where(hit, t_in, np.inf), normal


def _intersect_sphere(o, d, center, radius: float):
    oc = o - center
    b = _dot(oc, d)
    c = _dot(oc, oc) - radius**2
    disc = b * b - c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t = -b - sq
    hit = (disc >= 0) & (t > 1e-6)
    t = np.where(hit, t, np.inf)
    point = o + np.where(hit, t, 0.0)[:, None] * d
    return t, (point - center) / radius


def _intersect_vertical_cylinder(o, d, radius: float, y0: float, y1: float, caps: bool):
    o = np.broadcast_to(o, d.shape)
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]
    c = o[:, 0] ** 2 + o[:, 2] ** 2 - radius**2
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    y = o[:, 1] + t_side * d[:, 1]
    side = (disc >= 0) & (a > 1e-12) & (t_side > 1e-6) & (y >= y0) & (y <= y1)
    t = np.where(side, t_side, np.inf)
    point = o + np.where(side, t_side, 0.0)[:, None] * d
    normal = np.stack([point[:, 0], np.zeros(len(d)), point[:, 2]], axis=1) / radius
    if caps:
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cap = (y1 - o[:, 1]) / d[:, 1]
        px = o[:, 0] + t_cap * d[:, 0]
        pz = o[:, 2] + t_cap * d[:, 2]
        cap = (t_cap > 1e-6) & (px**2 + pz**2 <= radius**2) & (t_cap < t)
        t = np.where(cap, t_cap, t)
        normal[cap] = [0.0, 1.0, 0.0]
    return t, normal


def intersect_object(o, d, shape: int, scale: float):
    """Distance along each ray to the object (inf where missed) and the unit surface normal."""
    scale = scale * _OBJECT_SIZE
    if shape == 0:  # cube
        half = 1.05 * scale
        return _intersect_box(o, d, half, 2 * half)
    if shape == 1:  # cylinder
        radius = 1.1 * scale
        return _intersect_vertical_cylinder(o, d, radius, 0.0, 2.2 * scale, caps=True)
    if shape == 2:  # sphere
        radius = 1.2 * scale
        return _intersect_sphere(o, d, np.array([0.0, radius, 0.0]), radius)
    if shape == 3:  # capsule standing up: a cylinder with two half-spheres
        radius = 0.85 * scale
        y0, y1 = radius, radius + 1.5 * scale
        t, normal = _intersect_vertical_cylinder(o, d, radius, y0, y1, caps=False)
        for y in (y0, y1):
            ts, ns = _intersect_sphere(o, d, np.array([0.0, y, 0.0]), radius)
            closer = ts < t
            t = np.where(closer, ts, t)
            normal[closer] = ns[closer]
        return t, normal
    raise ValueError(f"shape must be 0..3 ({', '.join(SHAPE_NAMES)}), got {shape}")


def _bounding_sphere(shape: int, scale: float):
    """Centre height and radius of a sphere enclosing the object (for culling rays)."""
    scale = scale * _OBJECT_SIZE
    if shape == 0:
        half = 1.05 * scale
        return half, half * np.sqrt(3.0)
    if shape == 1:
        radius, half_height = 1.1 * scale, 1.1 * scale
        return half_height, np.hypot(radius, half_height)
    if shape == 2:
        return 1.2 * scale, 1.2 * scale
    half_height = 0.85 * scale + 0.75 * scale
    return half_height, half_height


def intersect_object_culled(o, d, shape: int, scale: float):
    """`intersect_object`, computed only for the rays that reach the object's bounding sphere."""
    centre_y, radius = _bounding_sphere(shape, scale)
    oc = o - np.array([0.0, centre_y, 0.0])
    b = _dot(oc, d)
    c = _dot(oc, oc) - (1.01 * radius) ** 2
    near = (b * b - c >= 0) & ((b < 0) | (c < 0))
    t = np.full(len(d), np.inf)
    normal = np.zeros_like(d)
    if np.any(near):
        sub_o = o[near] if np.ndim(o) == 2 else o
        t[near], normal[near] = intersect_object(sub_o, d[near], shape, scale)
    return t, normal


def _camera_rays(image_size: int, supersample: int, orientation_deg: float):
    """Camera origin (3,) and unit ray directions (image_size*ss, image_size*ss, 3)."""
    yaw = np.deg2rad(orientation_deg)
    origin = np.array([np.sin(yaw) * _CAMERA_DISTANCE, _CAMERA_HEIGHT, np.cos(yaw) * _CAMERA_DISTANCE])
    forward = _LOOK_AT - origin
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    n = image_size * supersample
    u = (np.arange(n) + 0.5) / n * 2.0 - 1.0  # -1 (left/top) .. 1 (right/bottom)
    uu, vv = np.meshgrid(u, u)
    dirs = forward * _FOCAL + uu[..., None] * right - vv[..., None] * up
    dirs /= np.sqrt(np.einsum("ijk,ijk->ij", dirs, dirs))[..., None]
    return origin, dirs


def render_weights(image_size: int, scale: float, shape: int, orientation: float, supersample: int = 4):
    """Weight maps (image_size*image_size, 3) for floor, walls and object of one geometry.

    Pixel colour = sum_k weight[:, k] * colour_k; a weight is coverage x shading (shadows included).
    """
    check_positive_int("supersample", supersample)
    origin, dirs = _camera_rays(image_size, supersample, orientation)
    d = dirs.reshape(-1, 3)
    n = len(d)

    # room: floor y = 0 and the two walls meeting at the corner behind the object (normals inward)
    corner = np.array([0.0, 0.0, -_CORNER_DISTANCE])
    planes = [
        (np.array([0.0, 1.0, 0.0]), np.zeros(3), "floor"),
        (np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0), corner, "wall"),
        (np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0), corner, "wall"),
    ]
    t_room = np.full(n, np.inf)
    room_plane = np.zeros(n, dtype=np.int64)
    for k, (normal, point, _) in enumerate(planes):
        denom = d @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((point - origin) @ normal) / denom
        t = np.where((denom < 0) & (t > 0), t, np.inf)
        closer = t < t_room
        t_room = np.where(closer, t, t_room)
        room_plane = np.where(closer, k, room_plane)

    t_obj, n_obj = intersect_object_culled(origin, d, shape, scale)
    on_object = t_obj < t_room

    weights = np.zeros((n, 3))
    # room surfaces: ambient + diffuse, the diffuse part dimmed where the object shadows it
    hit_room = ~on_object & np.isfinite(t_room)
    points = origin + np.where(hit_room, t_room, 0.0)[:, None] * d
    t_shadow, _ = intersect_object_culled(points + 1e-4 * _LIGHT, np.broadcast_to(_LIGHT, d.shape), shape, scale)
    lit = np.where(np.isfinite(t_shadow), _SHADOW, 1.0)
    for k, (normal, _, kind) in enumerate(planes):
        mask = hit_room & (room_plane == k)
        lambert = max(float(normal @ _LIGHT), 0.0)
        shade = _AMBIENT[kind] + _DIFFUSE[kind] * lambert * lit[mask]
        if kind == "floor":  # light falls off gently towards the back of the room
            depth = np.clip(-points[mask, 2] / _CORNER_DISTANCE, -1.0, 2.0)
            shade = shade * (1.0 - 0.08 * depth)
        weights[mask, 0 if kind == "floor" else 1] = shade
    # object: ambient + Lambert, with a faint fill light from the camera side
    view = -d[on_object]
    normal = n_obj[on_object]
    normal = normal / np.sqrt(_dot(normal, normal))[:, None]
    lambert = np.clip(normal @ _LIGHT, 0.0, None)
    fill = np.clip(_dot(normal, view), 0.0, None)
    weights[on_object, 2] = _AMBIENT["object"] + _DIFFUSE["object"] * lambert + 0.12 * fill

    ss = supersample
    weights = weights.reshape(image_size, ss, image_size, ss, 3).mean(axis=(1, 3))
    return weights.reshape(image_size * image_size, 3).astype(np.float32)


@functools.lru_cache(maxsize=4096)
def _cached_weights(image_size: int, scale: float, shape: int, orientation: float, supersample: int) -> np.ndarray:
    weights = render_weights(image_size, scale, shape, orientation, supersample=supersample)
    weights.setflags(write=False)
    return weights


def geometry_weights(image_size: int, scale: float, shape: int, orientation: float, supersample: int = 4):
    """`render_weights`, cached for the process (read-only result): each geometry is ray cast once."""
    return _cached_weights(int(image_size), round(float(scale), 6), int(shape), round(float(orientation), 6),
                           int(supersample))


class Shapes3DRenderer:
    """Renders batches of Shapes3D-like images from factor *values* (the labels of `3dshapes.h5`).

    Geometry weight maps are cached (per process) per (scale, shape, orientation) on first use.

    Args:
        image_size: 64 (like the real data) or any size >= 8, e.g. 32.
        supersample: rays per pixel along each axis (anti-aliasing).
    """

    def __init__(self, image_size: int = 64, supersample: int = 4):
        if int(image_size) < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        self.image_size = check_positive_int("image_size", image_size, minimum=8)
        self.supersample = check_positive_int("supersample", supersample)
        self._colours: dict[float, np.ndarray] = {}

    def geometry_weights(self, scale: float, shape: int, orientation: float) -> np.ndarray:
        return geometry_weights(self.image_size, scale, shape, orientation, self.supersample)

    def _colour(self, hue: float) -> np.ndarray:
        key = round(float(hue), 6)
        if key not in self._colours:
            self._colours[key] = hue_to_rgb(key)
        return self._colours[key]

    def render(
        self,
        floor_hue: Sequence[float],
        wall_hue: Sequence[float],
        object_hue: Sequence[float],
        scale: Sequence[float],
        shape: Sequence[int],
        orientation: Sequence[float],
    ) -> np.ndarray:
        """Images (num, H, W, 3) float32 in [0, 1] for per-image factor values."""
        columns = [np.atleast_1d(np.asarray(c, dtype=np.float64)) for c in
                   (floor_hue, wall_hue, object_hue, scale, shape, orientation)]
        num = len(columns[0])
        if any(len(c) != num for c in columns):
            raise ValueError("all factor value sequences must have the same length")
        size = self.image_size
        weights = np.empty((num, size * size, 3), dtype=np.float32)
        colours = np.empty((num, 3, 3), dtype=np.float32)
        for i in range(num):
            weights[i] = self.geometry_weights(columns[3][i], int(columns[4][i]), columns[5][i])
            colours[i, 0] = self._colour(columns[0][i])
            colours[i, 1] = self._colour(columns[1][i])
            colours[i, 2] = self._colour(columns[2][i])
        images = np.matmul(weights, colours)
        np.clip(images, 0.0, 1.0, out=images)
        return images.reshape(num, size, size, 3)
