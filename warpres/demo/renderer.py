"""Deterministic procedural face portraits: the image domain of the shipped demo models.

A :class:`FaceParams` fully determines one RGB portrait (uint8, H x W x 3) in an FFHQ-like
framing: the head centred, the eyes at a fixed height (0.44 H when ``pitch == 0``), neck and
clothed shoulders at the bottom, a textured background behind. :func:`render` draws it;
:func:`render_with_masks` also returns boolean masks of the semantic regions.

Geometry. The head is a 3D solid in head units (half-width ``a`` ~ 1, half-height ``b`` = 1.3,
depth ``c`` = 1.1), y up, z towards the camera, projected orthographically. Its horizontal
cross-section at height ``v`` (-1 chin .. 1 crown) has relative width
``r(v) = (1 - |v|**p) ** (1 / p)``, ``p = 2`` above the eyes and larger (a squarer jaw) below.
Everything on the face is placed in *face coordinates* ``(u, v)``: ``v`` the height as above
and ``u = sin(longitude)`` in [-1, 1], the horizontal position as a fraction of the local
width, so at ``yaw = pitch = 0`` a point appears at ``x = a * r(v) * u``, ``y = b * v``. The
head then rotates (pitch about the x axis, then yaw about the y axis) around a neck pivot
behind and below its centre, and the same point lands somewhere else. Because eyes, nose,
mouth, ears, freckles, moles, wrinkles, earrings, hair and glasses are all defined in face
coordinates, they move and foreshorten together with the face outline when the head turns;
the neck, clothing and background do not move. Positive ``yaw`` turns the face towards the
image's right, positive ``pitch`` tilts it up. The nose tip and glasses sit in front of the
surface, so they shift more than the cheeks: a parallax cue for the pose.

Attributes. *Semantic* attributes (:data:`SEMANTIC_ATTRIBUTES`) are the ones edits change, all
continuous: ``smile`` in [-1, 1] (frown .. broad open smile; only the mouth changes),
``yaw`` and ``pitch`` in [-1, 1] (+-35 and +-20 degrees), ``hair_hue`` in [0, 1) (a hue turn,
taken modulo 1; only the hair and eyebrows change), ``glasses`` in [0, 1] (the opacity of
the frames; 0 is no glasses) and ``age`` in [0, 1] (wrinkles fade in from 0.3, hair greys
from 0.5). Everything else is *identity*: skin tone, face and jaw width, eye colour, hair
style, saturation and lightness, brow thickness, mouth width, and the details a low-rate
latent code struggles with: a seeded freckle pattern and moles in face coordinates, earrings,
patterned clothing and a textured background, each drawn from its own integer seed. The same
identity re-rendered by :func:`with_attribute` differs from the original only where the
changed attribute lives, which is what makes ground-truth edits measurable.

Rendering is supersampled (drawn at :data:`SUPERSAMPLE` x the size with ``cv2.LINE_AA`` at
sub-pixel precision, then averaged down with ``cv2.INTER_AREA``) and uses no global random
state, so the same parameters give bit-identical images in every process.
"""

from __future__ import annotations

import colorsys
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import cv2
import numpy as np

SUPERSAMPLE = 2
MAX_YAW_DEGREES = 35.0
MAX_PITCH_DEGREES = 20.0
SEED_LIMIT = 1 << 24  # seeds stay exact in a float32 vector

SEMANTIC_ATTRIBUTES = ("smile", "yaw", "pitch", "hair_hue", "glasses", "age")
MASK_NAMES = ("background", "clothing", "neck", "face", "hair", "eyes", "mouth", "earrings",
              "glasses", "freckles", "moles")
"""Names of :func:`render_with_masks`'s masks. Each marks every output pixel the region touches
at all (any of its supersampled subpixels), so anti-aliased edges belong to both neighbours.
The first eight are visible regions: every pixel is in at least one, and away from edges in
exactly one (``hair`` includes the eyebrows, ``face`` all head skin including ears, freckles,
moles, nose and wrinkles). ``glasses``, ``freckles`` and ``moles`` overlay them: what lies under
a lens keeps its own label."""

_PARTITION = MASK_NAMES[:8]
_LABEL = {name: index for index, name in enumerate(_PARTITION)}
_OVERLAYS = MASK_NAMES[8:]
_SHIFT = 4  # cv2 fixed-point fraction bits: sub-pixel coordinates keep continuous edits continuous
_NO_OFFSET = np.zeros(2, np.int32)
_HEAD_HALF_HEIGHT = 1.3
_HEAD_DEPTH = 1.1
_PIVOT = np.array([0.0, -1.0, -0.4])  # the neck joint, below and behind the head centre
_EYE_U, _EYE_V = 0.4, 0.0
_MOUTH_V = -0.58


class HairStyle(IntEnum):
    BUZZ = 0
    SHORT = 1
    BOB = 2
    LONG = 3
    CURLY = 4
    BUN = 5


class EarringStyle(IntEnum):
    NONE = 0
    STUD = 1
    HOOP = 2
    DROP = 3


class ClothingPattern(IntEnum):
    SOLID = 0
    STRIPES = 1
    DIAGONAL = 2
    CHECKS = 3
    DOTS = 4


class BackgroundStyle(IntEnum):
    GRADIENT = 0
    NOISE = 1
    STRIPES = 2
    BOKEH = 3


_ENUMS: dict[str, type[IntEnum]] = {"hair_style": HairStyle, "earring_style": EarringStyle,
                                    "clothing_pattern": ClothingPattern, "background_style": BackgroundStyle}
_HUES = ("hair_hue", "eye_hue", "earring_hue", "clothing_hue", "background_hue")
_SIGNED = ("smile", "yaw", "pitch")
_SEEDS = ("freckle_seed", "mole_seed", "clothing_seed", "background_seed")
_MAX_MOLES = 3


@dataclass(frozen=True, slots=True)
class FaceParams:
    """One portrait. Floats are in [0, 1] unless noted; hues are turns, taken modulo 1.

    The flat vector of :meth:`to_vector` lists the fields in this order (indices in brackets):
    semantic ``smile`` [0] (-1..1), ``yaw`` [1] (-1..1), ``pitch`` [2] (-1..1), ``hair_hue`` [3],
    ``glasses`` [4], ``age`` [5]; identity ``skin_tone`` [6] (light .. dark), ``face_width`` [7],
    ``jaw_width`` [8], ``eye_hue`` [9], ``eye_value`` [10] (dark .. light iris), ``hair_style``
    [11] (:class:`HairStyle`), ``hair_saturation`` [12], ``hair_value`` [13], ``brow_thickness``
    [14], ``mouth_width`` [15], ``freckle_density`` [16], ``freckle_seed`` [17], ``mole_count``
    [18] (0..3), ``mole_seed`` [19], ``earring_style`` [20] (:class:`EarringStyle`),
    ``earring_hue`` [21], ``clothing_pattern`` [22] (:class:`ClothingPattern`), ``clothing_hue``
    [23], ``clothing_seed`` [24], ``background_style`` [25] (:class:`BackgroundStyle`),
    ``background_hue`` [26], ``background_seed`` [27]. Categories, counts and seeds (in
    [0, 2**24)) are integers stored as floats.
    """

    smile: float = 0.3
    yaw: float = 0.0
    pitch: float = 0.0
    hair_hue: float = 0.07
    glasses: float = 0.0
    age: float = 0.2
    skin_tone: float = 0.3
    face_width: float = 0.5
    jaw_width: float = 0.5
    eye_hue: float = 0.08
    eye_value: float = 0.4
    hair_style: int = HairStyle.SHORT
    hair_saturation: float = 0.6
    hair_value: float = 0.35
    brow_thickness: float = 0.5
    mouth_width: float = 0.5
    freckle_density: float = 0.0
    freckle_seed: int = 0
    mole_count: int = 0
    mole_seed: int = 0
    earring_style: int = EarringStyle.NONE
    earring_hue: float = 0.12
    clothing_pattern: int = ClothingPattern.SOLID
    clothing_hue: float = 0.6
    clothing_seed: int = 0
    background_style: int = BackgroundStyle.GRADIENT
    background_hue: float = 0.55
    background_seed: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise TypeError(f"{field.name} must be an integer, got {value!r}")
                value = int(value)
                limit = (len(_ENUMS[field.name]) if field.name in _ENUMS
                         else _MAX_MOLES + 1 if field.name == "mole_count" else SEED_LIMIT)
                if not 0 <= value < limit:
                    raise ValueError(f"{field.name} must be in [0, {limit}), got {value}")
            else:
                value = float(value)
                if not np.isfinite(value):
                    raise ValueError(f"{field.name} must be finite, got {value}")
                if field.name in _HUES:
                    value %= 1.0
                low = -1.0 if field.name in _SIGNED else 0.0
                if not low <= value <= 1.0:
                    raise ValueError(f"{field.name} must be in [{low}, 1], got {value}")
            object.__setattr__(self, field.name, value)

    @staticmethod
    def field_names() -> tuple[str, ...]:
        """Field names in vector order."""
        return tuple(field.name for field in dataclasses.fields(FaceParams))

    def to_vector(self) -> np.ndarray:
        """float64 (28,) in the documented field order."""
        return np.array([getattr(self, name) for name in self.field_names()], dtype=np.float64)

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> FaceParams:
        """Inverse of :meth:`to_vector`; integer fields are rounded, so a regressed vector works too."""
        values = np.asarray(vector, dtype=np.float64).reshape(-1)
        names = cls.field_names()
        if values.shape != (len(names),):
            raise ValueError(f"expected {len(names)} values, got {values.shape[0]}")
        kwargs: dict[str, float | int] = {}
        for field, value in zip(dataclasses.fields(cls), values, strict=True):
            kwargs[field.name] = int(round(value)) if field.type == "int" else float(value)
        return cls(**kwargs)


def with_attribute(params: FaceParams, **changes: float) -> FaceParams:
    """The same identity with semantic attributes changed (``dataclasses.replace`` for the rest)."""
    unknown = set(changes) - set(SEMANTIC_ATTRIBUTES)
    if unknown:
        raise ValueError(f"not semantic attributes: {sorted(unknown)}; known: {SEMANTIC_ATTRIBUTES}")
    return dataclasses.replace(params, **changes)


def without_details(params: FaceParams) -> FaceParams:
    """The same face without its seeded and small identity details (freckles, moles, earrings,
    clothing patterns, background textures): what a low-rate latent can hold of it."""
    return dataclasses.replace(params, freckle_density=0.0, mole_count=0, earring_style=EarringStyle.NONE,
                               clothing_pattern=ClothingPattern.SOLID, background_style=BackgroundStyle.GRADIENT)


def render(params: FaceParams, size: int = 128) -> np.ndarray:
    """uint8 RGB (size, size, 3)."""
    return _draw(params, size, with_masks=False).image(size)


def render_with_masks(params: FaceParams, size: int = 128) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The image of :func:`render` (bit-identical) and boolean (size, size) masks named as in :data:`MASK_NAMES`."""
    canvas = _draw(params, size, with_masks=True)
    return canvas.image(size), canvas.masks(size)


def surface_motion(before: FaceParams, after: FaceParams, size: int = 128,
                   spacing: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """How the face's surface moves between the renders of `before` and `after` (the same
    identity, e.g. a pose edit): points (N, 2) in pixels of the `after` image (x, y; pixel i spans
    [i, i + 1)) and at each the displacement (N, 2) to the same surface point in the `before`
    image, i.e. the backward flow that warps `before` onto `after`. The points lie on a grid of
    face coordinates (`spacing` apart) that faces the camera in both renders and inside the image:
    the skin where freckles and moles sit."""
    u, v = np.meshgrid(np.arange(-0.9, 0.9 + 1e-9, spacing), np.arange(-0.9, 0.7 + 1e-9, spacing))
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    source, target = _Head(before, size), _Head(after, size)
    seen = (source.facing(uv) > 0.3) & (target.facing(uv) > 0.3)
    origin, points = source.face(uv[seen]), target.face(uv[seen])
    inside = ((points > 0) & (points < size)).all(axis=1) & ((origin > 0) & (origin < size)).all(axis=1)
    return points[inside], origin[inside] - points[inside]


Colour = tuple[float, float, float]


def _hsv(hue: float, saturation: float, value: float) -> Colour:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, float(np.clip(saturation, 0, 1)), float(np.clip(value, 0, 1)))
    return 255.0 * red, 255.0 * green, 255.0 * blue


def _mix(first: Colour, second: Colour, amount: float) -> Colour:
    return tuple(f + (s - f) * amount for f, s in zip(first, second, strict=True))  # type: ignore[return-value]


def _scale(colour: Colour, factor: float) -> Colour:
    return tuple(min(255.0, c * factor) for c in colour)  # type: ignore[return-value]


def _smoothstep(low: float, high: float, x: float) -> float:
    t = min(max((x - low) / (high - low), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ellipse(centre: tuple[float, float], half_width: float, half_height: float, count: int = 24) -> np.ndarray:
    """(count, 2) points of an ellipse in whatever 2D coordinates the caller uses."""
    angle = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
    return np.stack([centre[0] + half_width * np.cos(angle), centre[1] + half_height * np.sin(angle)], axis=1)


def _curve(start: tuple[float, float], middle: tuple[float, float], end: tuple[float, float],
           count: int = 12) -> np.ndarray:
    """(count, 2) points of the quadratic Bezier from ``start`` through ``middle`` (at t = 0.5) to ``end``."""
    p0, p2 = np.asarray(start, float), np.asarray(end, float)
    p1 = 2.0 * np.asarray(middle, float) - 0.5 * (p0 + p2)
    t = np.linspace(0.0, 1.0, count)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


class _Canvas:
    """Supersampled colour buffer plus, when masks are wanted, a label map and overlay buffers."""

    def __init__(self, size: int, with_masks: bool) -> None:
        self.size = size * SUPERSAMPLE
        self.pixels = np.zeros((self.size, self.size, 3), np.uint8)
        self.labels = np.zeros((self.size, self.size), np.uint8) if with_masks else None
        self.overlays = {name: np.zeros((self.size, self.size), np.uint8) for name in _OVERLAYS} if with_masks else {}

    def thickness(self, fraction: float) -> int:
        """A stroke width given as a fraction of the image size, in canvas pixels."""
        return max(1, round(fraction * self.size))

    def fill(self, polygon: np.ndarray, colour: Colour, label: str | None = None, alpha: float = 1.0,
             overlay: str | None = None) -> None:
        points = _fixed(polygon)
        self._paint(lambda target, value, line, origin: cv2.fillPoly(target, [points - origin], value, line, _SHIFT),
                    polygon, 0, colour, label, alpha, overlay)

    def stroke(self, polyline: np.ndarray, colour: Colour, width: int, label: str | None = None,
               alpha: float = 1.0, closed: bool = False, overlay: str | None = None) -> None:
        """``polyline``: (M, 2) points, or (K, M, 2) for K polylines drawn in one call."""
        polyline = np.asarray(polyline, float)
        lines = list(_fixed(polyline).reshape(-1, polyline.shape[-2], 2))
        self._paint(lambda target, value, line, origin: cv2.polylines(target, [p - origin for p in lines], closed,
                                                                      value, width, line, _SHIFT),
                    polyline.reshape(-1, 2), width, colour, label, alpha, overlay)

    def dot(self, centre: np.ndarray, radius: float, colour: Colour, label: str | None = None,
            alpha: float = 1.0, overlay: str | None = None) -> None:
        fixed_centre = _fixed(np.asarray(centre, float)[None])[0]
        fixed_radius = max(1, round(radius * (1 << _SHIFT)))

        def draw(target: np.ndarray, value: tuple, line: int, origin: np.ndarray) -> None:
            x, y = (int(c) for c in fixed_centre - origin)
            cv2.circle(target, (x, y), fixed_radius, value, -1, line, _SHIFT)

        self._paint(draw, np.asarray(centre, float)[None] + np.array([[-radius, -radius], [radius, radius]]), 0,
                    colour, label, alpha, overlay)

    def _paint(self, draw: Callable[[np.ndarray, tuple, int, np.ndarray], object], extent: np.ndarray, margin: int,
               colour: Colour, label: str | None, alpha: float, overlay: str | None) -> None:
        if alpha <= 0.0:
            return
        value = tuple(int(round(c)) for c in colour)
        if alpha >= 1.0:
            draw(self.pixels, value, cv2.LINE_AA, _NO_OFFSET)
        else:
            self._blend(draw, extent, margin, value, alpha)
        if self.labels is not None and label is not None:
            draw(self.labels, (_LABEL[label],), cv2.LINE_8, _NO_OFFSET)
        if overlay in self.overlays:
            draw(self.overlays[overlay], (1,), cv2.LINE_8, _NO_OFFSET)

    def _blend(self, draw: Callable[[np.ndarray, tuple, int, np.ndarray], object], extent: np.ndarray, margin: int,
               value: tuple, alpha: float) -> None:
        """Composite a translucent shape, touching only its bounding box."""
        low = np.floor(extent.min(axis=0)).astype(int) - margin - 2
        high = np.ceil(extent.max(axis=0)).astype(int) + margin + 3
        x0, y0 = np.clip(low, 0, self.size)
        x1, y1 = np.clip(high, 0, self.size)
        if x1 <= x0 or y1 <= y0:
            return
        coverage = np.zeros((y1 - y0, x1 - x0), np.uint8)
        draw(coverage, (255,), cv2.LINE_AA, np.array([x0, y0], np.int32) << _SHIFT)
        weight = coverage.astype(np.float32) * np.float32(alpha / 255.0)
        region = self.pixels[y0:y1, x0:x1]
        _composite(region, np.full_like(region, value), weight)

    def image(self, size: int) -> np.ndarray:
        return cv2.resize(self.pixels, (size, size), interpolation=cv2.INTER_AREA)

    def masks(self, size: int) -> dict[str, np.ndarray]:
        """Per region, the output pixels any of whose subpixels it labels."""
        assert self.labels is not None
        buffers = {name: self.labels == index for index, name in enumerate(_PARTITION)} | self.overlays
        return {name: buffer.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).any(axis=(1, 3))
                for name, buffer in buffers.items()}


def _composite(target: np.ndarray, source: np.ndarray, weight: np.ndarray) -> None:
    """In place: ``target = source * weight + target * (1 - weight)`` for uint8 images and float32 weights."""
    target[:] = cv2.blendLinear(source, target, weight, 1.0 - weight)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 2)


class _Head:
    """The posed head: face coordinates -> 3D points -> canvas pixels."""

    def __init__(self, params: FaceParams, canvas_size: int) -> None:
        self.half_width = 0.92 + 0.2 * params.face_width
        self.jaw_exponent = 1.9 + 1.1 * params.jaw_width
        yaw = np.radians(MAX_YAW_DEGREES * params.yaw)
        pitch = np.radians(MAX_PITCH_DEGREES * params.pitch)
        turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        tilt = np.array([[1, 0, 0], [0, np.cos(pitch), np.sin(pitch)], [0, -np.sin(pitch), np.cos(pitch)]])
        self.rotation = turn @ tilt
        self.scale = 0.225 * canvas_size
        self.origin = np.array([0.5 * canvas_size, 0.44 * canvas_size])
        self.flip = np.array([self.scale, -self.scale])  # y points up in head space, down in the image

    def width(self, v: np.ndarray) -> np.ndarray:
        """Relative cross-section width r(v)."""
        v = np.asarray(v, float)
        exponent = np.where(v < 0, self.jaw_exponent, 2.0)
        return (1.0 - np.minimum(np.abs(v), 1.0) ** exponent) ** (1.0 / exponent)

    def surface(self, uv: np.ndarray, lift: float = 0.0) -> np.ndarray:
        """(N, 3) points at face coordinates ``uv`` (N, 2), ``lift`` head units out of the surface."""
        sin_lon = np.clip(uv[:, 0], -1.0, 1.0)
        radius = self.width(uv[:, 1])
        points = np.empty((len(uv), 3))
        points[:, 0] = (self.half_width * radius + lift) * sin_lon
        points[:, 1] = _HEAD_HALF_HEIGHT * uv[:, 1]
        points[:, 2] = (_HEAD_DEPTH * radius + lift) * np.sqrt(1.0 - sin_lon**2)
        return points

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) head-frame points -> (N, 2) canvas pixels."""
        posed = (points - _PIVOT) @ self.rotation.T + _PIVOT
        return self.origin + posed[:, :2] * self.flip

    def face(self, uv: np.ndarray, lift: float = 0.0) -> np.ndarray:
        """(N, 2) face coordinates -> (N, 2) canvas pixels."""
        return self.project(self.surface(np.asarray(uv, float), lift))

    def facing(self, uv: np.ndarray) -> np.ndarray:
        """How directly each surface point faces the camera (posed normal's z), for culling details."""
        points = self.surface(uv)
        normals = points / np.array([self.half_width**2, _HEAD_HALF_HEIGHT**2, _HEAD_DEPTH**2])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        return normals @ self.rotation[2]

    def outline(self, inflate: float = 1.0, lowest: float = -1.0, extra: np.ndarray | None = None) -> np.ndarray:
        """Convex silhouette (canvas pixels) of the head part above height ``lowest``, plus ``extra`` 3D points."""
        lon, v = np.meshgrid(np.linspace(-np.pi, np.pi, 32, endpoint=False), np.linspace(lowest, 1.0, 17))
        radius = inflate * self.width(v)
        points = np.stack([self.half_width * radius * np.sin(lon), inflate * _HEAD_HALF_HEIGHT * v,
                           _HEAD_DEPTH * radius * np.cos(lon)], axis=-1).reshape(-1, 3)
        if extra is not None:
            points = np.concatenate([points, extra])
        return cv2.convexHull(self.project(points).astype(np.float32))[:, 0].astype(np.float64)

    def side_facing(self, side: int) -> float:
        """The posed z of the outward normal of the head's ``side`` (+1 right, -1 left) at ear height."""
        return float(side * self.rotation[2, 0])


@dataclass(frozen=True)
class _Palette:
    skin: Colour
    hair: Colour
    brows: Colour
    iris: Colour
    lips: Colour

    @staticmethod
    def of(params: FaceParams) -> _Palette:
        tones = np.array([(255, 226, 200), (240, 196, 160), (222, 170, 128), (190, 130, 90), (140, 90, 60),
                          (92, 60, 42)], float)
        position = params.skin_tone * (len(tones) - 1)
        index = min(int(position), len(tones) - 2)
        skin = tuple(tones[index] + (tones[index + 1] - tones[index]) * (position - index))
        grey = _smoothstep(0.5, 1.0, params.age)
        base_hair = _hsv(params.hair_hue, params.hair_saturation, params.hair_value)
        hair = _mix(base_hair, (205.0, 205.0, 212.0), grey)
        brows = _mix(_scale(base_hair, 0.7), (150.0, 150.0, 155.0), grey)
        iris = _hsv(params.eye_hue, 0.65, 0.3 + 0.5 * params.eye_value)
        lips = _mix(_scale(skin, 0.85), (200.0, 85.0, 95.0), 0.45)
        return _Palette(skin=skin, hair=hair, brows=brows, iris=iris, lips=lips)  # type: ignore[arg-type]


def _draw(params: FaceParams, size: int, with_masks: bool) -> _Canvas:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")
    canvas = _Canvas(int(size), with_masks)
    head = _Head(params, canvas.size)
    palette = _Palette.of(params)
    style = HairStyle(params.hair_style)
    _draw_background(canvas, params)
    _draw_back_hair(canvas, head, palette, style)
    _draw_body(canvas, head, palette, params)
    canvas.fill(head.outline(), palette.skin, "face")
    _draw_hair_cap(canvas, head, palette, style)
    canvas.fill(head.face(_FACE_REGIONS[style]), palette.skin, "face")
    if style in (HairStyle.BUZZ, HairStyle.SHORT, HairStyle.CURLY, HairStyle.BUN):
        _draw_ears(canvas, head, palette)
    _draw_wrinkles(canvas, head, palette, params.age)
    _draw_freckles_and_moles(canvas, head, palette, params)
    _draw_nose(canvas, head, palette)
    _draw_eyes(canvas, head, palette, params)
    _draw_mouth(canvas, head, palette, params)
    _draw_fringe(canvas, head, palette, style)
    _draw_earrings(canvas, head, params)
    _draw_glasses(canvas, head, params.glasses)
    return canvas


def _hairline(style: HairStyle) -> float:
    return {HairStyle.BUZZ: 0.58, HairStyle.CURLY: 0.48, HairStyle.BUN: 0.56}.get(style, 0.52)


def _face_region(style: HairStyle) -> np.ndarray:
    """Face coordinates of the skin in front: below the hairline, within the sides, down to the chin."""
    top = _hairline(style)
    across = np.linspace(-1.0, 1.0, 21)
    hairline = np.stack([across, top - 0.2 * across**2], axis=1)
    down = np.linspace(top - 0.2, -1.0, 16)
    right = np.stack([np.ones_like(down), down], axis=1)
    left = np.stack([-np.ones_like(down), down[::-1]], axis=1)
    return np.concatenate([hairline, right, left])


_FACE_REGIONS = {style: _face_region(style) for style in HairStyle}


def _draw_background(canvas: _Canvas, params: FaceParams) -> None:
    rng = np.random.default_rng(params.background_seed)
    hue = params.background_hue
    first = _hsv(hue, rng.uniform(0.15, 0.5), rng.uniform(0.55, 0.95))
    second = _hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.75))
    n = canvas.size
    style = BackgroundStyle(params.background_style)
    if style == BackgroundStyle.NOISE:
        cells = int(rng.integers(3, 7))
        mix = cv2.resize(rng.random((cells, cells)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    else:  # a linear ramp, exact when interpolated up from a coarse grid
        angle = rng.uniform(-0.6, 0.6)
        coarse = (np.arange(16, dtype=np.float32) + 0.5) / 16 - 0.5
        ramp = 0.5 + coarse[None, :] * np.float32(np.sin(angle)) + coarse[:, None] * np.float32(np.cos(angle))
        mix = cv2.resize(ramp, (n, n), interpolation=cv2.INTER_LINEAR)
    if style == BackgroundStyle.STRIPES:
        angle = rng.uniform(0.0, np.pi)
        cycles = np.float32(2 * np.pi / rng.uniform(0.08, 0.2))
        grid = (np.arange(n, dtype=np.float32) + 0.5) / n
        phase = np.sin((grid[None, :] * np.float32(np.cos(angle)) + grid[:, None] * np.float32(np.sin(angle))) * cycles)
        mix = 0.35 * mix + 0.65 * np.clip(0.5 + 2.0 * phase, 0, 1)
    mix = np.clip(mix, 0.0, 1.0)
    channels = [cv2.convertScaleAbs(mix, alpha=float(s - f), beta=float(f)) for f, s in zip(first, second, strict=True)]
    canvas.pixels[:] = cv2.merge(channels)
    if style == BackgroundStyle.BOKEH:
        for _ in range(int(rng.integers(8, 16))):
            centre = rng.uniform(0, n, 2)
            canvas.dot(centre, rng.uniform(0.03, 0.09) * n, _mix(first, (255.0, 255.0, 240.0), 0.5),
                       alpha=float(rng.uniform(0.25, 0.6)))


def _draw_back_hair(canvas: _Canvas, head: _Head, palette: _Palette, style: HairStyle) -> None:
    width = 1.18 * head.half_width
    if style == HairStyle.LONG:
        tips = np.linspace(-width, width, 7)
        extra = np.stack([tips, -2.3 - 0.15 * np.cos(tips * 3.0), np.full_like(tips, -0.4)], axis=1)
    elif style == HairStyle.BOB:
        extra = np.array([[-width, -1.25, -0.2], [width, -1.25, -0.2], [-0.8 * width, -1.35, -0.3],
                          [0.8 * width, -1.35, -0.3]])
    else:
        return
    canvas.fill(head.outline(inflate=1.1, lowest=-0.2, extra=extra), _scale(palette.hair, 0.85), "hair")


def _draw_body(canvas: _Canvas, head: _Head, palette: _Palette, params: FaceParams) -> None:
    n = canvas.size
    neck_colour = _scale(palette.skin, 0.86)
    neck_half = 0.4 * head.half_width * head.scale
    neck = np.array([[0.5 * n - neck_half, 0.6 * n], [0.5 * n + neck_half, 0.6 * n],
                     [0.5 * n + 1.15 * neck_half, 0.95 * n], [0.5 * n - 1.15 * neck_half, 0.95 * n]])
    canvas.fill(neck, neck_colour, "neck")
    rng = np.random.default_rng(params.clothing_seed)
    shoulders = _ellipse((0.5 * n, 1.15 * n), 0.62 * n, 0.32 * n, 48)
    shoulders[:, 1] = np.minimum(shoulders[:, 1], 1.05 * n)  # a bottom edge below the image, never blended
    top = int(np.floor(shoulders[:, 1].min()))
    coverage = np.zeros((n, n), np.uint8)
    cv2.fillPoly(coverage, [_fixed(shoulders)], 255, cv2.LINE_AA, _SHIFT)
    texture = np.rint(_clothing_texture(params, rng, n, top)).astype(np.uint8)
    _composite(canvas.pixels[top:], texture, coverage[top:].astype(np.float32) * np.float32(1 / 255))
    if canvas.labels is not None:
        cv2.fillPoly(canvas.labels, [_fixed(shoulders)], _LABEL["clothing"], cv2.LINE_8, _SHIFT)
    neck_top = 0.5 * n, 0.835 * n
    if rng.random() < 0.5:
        opening = _curve((neck_top[0] - 0.11 * n, neck_top[1]), (neck_top[0], neck_top[1] + 0.07 * n),
                         (neck_top[0] + 0.11 * n, neck_top[1]))
    else:
        opening = np.array([[neck_top[0] - 0.1 * n, neck_top[1]], [neck_top[0], neck_top[1] + 0.11 * n],
                            [neck_top[0] + 0.1 * n, neck_top[1]]])
    canvas.fill(np.concatenate([opening, [[neck_top[0], neck_top[1] - 0.02 * n]]]), neck_colour, "neck")
    collar = _scale(_hsv(params.clothing_hue, 0.5, 0.6), 0.7)
    canvas.stroke(opening, collar, canvas.thickness(0.012), "clothing")


def _clothing_texture(params: FaceParams, rng: np.random.Generator, n: int, top: int) -> np.ndarray:
    """(n - top, n, 3) float32 colours of the seeded garment pattern for canvas rows ``top:``."""
    base = np.array(_hsv(params.clothing_hue, rng.uniform(0.35, 0.8), rng.uniform(0.45, 0.9)), np.float32)
    accent_hue = params.clothing_hue + rng.choice([0.0, 0.5, 0.15])
    accent = np.array(_hsv(accent_hue, rng.uniform(0.1, 0.5), rng.choice([rng.uniform(0.1, 0.3), 0.97])), np.float32)
    period, angle, phase = (float(x) for x in rng.uniform([0.05 * n, -0.3, 0.0], [0.1 * n, 0.3, 1.0]))
    y, x = np.mgrid[top:n, 0:n].astype(np.float32) + 0.5
    pattern = ClothingPattern(params.clothing_pattern)

    def stripes(direction: float, width: float) -> np.ndarray:
        along = (x * float(np.sin(direction)) + y * float(np.cos(direction))) / period + phase
        distance = np.abs(along - np.floor(along) - 0.5) * period
        return np.clip(0.5 * width * period - distance + 0.5, 0.0, 1.0)

    if pattern == ClothingPattern.STRIPES:
        amount = stripes(angle, 0.45)
    elif pattern == ClothingPattern.DIAGONAL:
        amount = stripes(np.pi / 4 + angle, 0.4)
    elif pattern == ClothingPattern.CHECKS:
        amount = 0.5 * (stripes(angle, 0.5) + stripes(angle + np.pi / 2, 0.5))
    elif pattern == ClothingPattern.DOTS:
        cell_x = (x / period + phase) % 1.0 - 0.5
        cell_y = (y / period + phase + 0.5 * np.floor(x / period + phase)) % 1.0 - 0.5
        amount = np.clip(0.22 * period - np.hypot(cell_x, cell_y) * period + 0.5, 0.0, 1.0)
    else:
        amount = np.zeros_like(x)
    shade = 1.0 - 0.25 * np.clip((y - top) / (n - top), 0, 1)  # a little darker towards the bottom edge
    return (base + (accent - base) * amount[..., None]) * shade[..., None]


def _draw_hair_cap(canvas: _Canvas, head: _Head, palette: _Palette, style: HairStyle) -> None:
    if style == HairStyle.BUZZ:
        canvas.fill(head.outline(inflate=1.02, lowest=0.05), _mix(palette.hair, palette.skin, 0.35), "hair")
        return
    inflate = {HairStyle.CURLY: 1.25, HairStyle.SHORT: 1.1, HairStyle.BUN: 1.05}.get(style, 1.12)
    cap = head.outline(inflate=inflate, lowest=-0.05 if style != HairStyle.CURLY else -0.35)
    canvas.fill(cap, palette.hair, "hair")
    if style == HairStyle.CURLY:
        centre = cap.mean(axis=0)
        for point in cap[::2]:
            outward = point + 0.04 * (point - centre)
            canvas.dot(outward, 0.22 * head.scale, palette.hair, "hair")
    if style == HairStyle.BUN:
        bun = head.project(np.array([[0.0, 1.05 * _HEAD_HALF_HEIGHT, -0.35]]))[0]
        canvas.dot(bun, 0.45 * head.scale, palette.hair, "hair")
    strand = _scale(palette.hair, 0.8)
    for offset in (-0.6, -0.3, 0.0, 0.3, 0.6):
        line = np.stack([np.linspace(offset * 0.4, offset, 6), np.linspace(0.98, _hairline(style) - 0.05, 6)], axis=1)
        canvas.stroke(head.face(line, lift=0.12), strand, canvas.thickness(0.008), "hair")


def _draw_fringe(canvas: _Canvas, head: _Head, palette: _Palette, style: HairStyle) -> None:
    across = np.linspace(-1.0, 1.0, 15)
    if style == HairStyle.SHORT:
        edge = np.stack([across, 0.3 + 0.12 * (across + 1.0) - 0.05 * np.cos(6 * across)], axis=1)
    elif style == HairStyle.BOB:
        edge = np.stack([across, 0.3 - 0.06 * across**2], axis=1)
    elif style == HairStyle.LONG:
        edge = np.stack([across, 0.5 - 0.45 * np.abs(across) ** 1.5], axis=1)
    else:
        return
    top = np.stack([across[::-1], np.full_like(across, 0.95)], axis=1)
    canvas.fill(head.face(np.concatenate([edge, top]), lift=0.04), palette.hair, "hair")


def _ear_frames(head: _Head) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, float]]:
    """Per ear: side, 3D centre, vertical and horizontal in-plane axes, and opacity (fades as it turns away)."""
    frames = []
    height = -0.12
    for side in (-1, 1):
        radius = head.half_width * float(head.width(np.array(height)))
        centre = np.array([side * (radius + 0.04), height * _HEAD_HALF_HEIGHT, -0.1])
        normal = np.array([side * np.cos(np.radians(50)), 0.0, np.sin(np.radians(50))])
        vertical = np.array([0.0, 1.0, 0.0])
        across = np.cross(normal, vertical)
        opacity = 1.0 - _smoothstep(0.12, 0.42, -head.side_facing(side))
        frames.append((side, centre, vertical, across, opacity))
    return frames


def _draw_ears(canvas: _Canvas, head: _Head, palette: _Palette) -> None:
    angle = np.linspace(0, 2 * np.pi, 20, endpoint=False)[:, None]
    for _, centre, vertical, across, opacity in _ear_frames(head):
        outer = centre + 0.24 * np.sin(angle) * vertical + 0.15 * np.cos(angle) * across
        inner = centre + 0.03 * across + 0.14 * np.sin(angle) * vertical + 0.07 * np.cos(angle) * across
        canvas.fill(head.project(outer), palette.skin, "face", alpha=opacity)
        canvas.fill(head.project(inner), _scale(palette.skin, 0.82), "face", alpha=opacity)


def _wrinkle_lines() -> np.ndarray:
    """(K, 12, 2) face coordinates of forehead lines, nasolabial folds, under-eye lines and crow's feet."""
    lines = [_curve((-0.45, v), (0.0, v + 0.03), (0.45, v)) for v in (0.34, 0.42)]
    for side in (-1, 1):
        lines.append(_curve((side * 0.2, -0.3), (side * 0.33, -0.45), (side * 0.42, -0.6)))
        lines.append(_curve((side * 0.3, -0.13), (side * 0.4, -0.16), (side * 0.5, -0.13)))
        lines.extend(_curve((side * 0.66, 0.0), (side * 0.72, 0.5 * rise), (side * 0.78, rise))
                     for rise in (-0.07, 0.0, 0.07))
    return np.stack(lines)


_WRINKLES = _wrinkle_lines()


def _draw_wrinkles(canvas: _Canvas, head: _Head, palette: _Palette, age: float) -> None:
    strength = _smoothstep(0.3, 1.0, age)
    if strength == 0.0:
        return
    lines = head.face(_WRINKLES.reshape(-1, 2)).reshape(_WRINKLES.shape)
    canvas.stroke(lines, _scale(palette.skin, 1.0 - 0.3 * strength), canvas.thickness(0.007), "face")


def _surface_dots(head: _Head, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canvas centres of surface dots and how visible each is (0 when turned away)."""
    visibility = np.clip((head.facing(uv) - 0.1) / 0.3, 0.0, 1.0)
    return head.face(uv), visibility


def _draw_freckles_and_moles(canvas: _Canvas, head: _Head, palette: _Palette, params: FaceParams) -> None:
    count = int(round(60 * params.freckle_density))
    if count:
        rng = np.random.default_rng(params.freckle_seed)
        cluster = rng.choice(3, count)
        centres = np.array([[-0.35, -0.22], [0.35, -0.22], [0.0, -0.12]])[cluster]
        spread = np.array([[0.18, 0.1], [0.18, 0.1], [0.12, 0.08]])[cluster]
        uv = centres + rng.normal(size=(count, 2)) * spread
        radii = rng.uniform(0.005, 0.009, count) * canvas.size
        strengths = rng.uniform(0.45, 0.8, count)
        points, visibility = _surface_dots(head, uv)
        freckle = _mix(palette.skin, (120.0, 60.0, 30.0), 0.5)
        for point, radius, strength, seen in zip(points, radii, strengths, visibility, strict=True):
            canvas.dot(point, radius, _mix(palette.skin, freckle, strength), "face", alpha=seen, overlay="freckles")
    if params.mole_count:
        rng = np.random.default_rng(params.mole_seed)
        uv = []
        while len(uv) < params.mole_count:
            candidate = rng.uniform([-0.75, -0.8], [0.75, 0.35])
            clear_of_features = (np.hypot(np.abs(candidate[0]) - _EYE_U, candidate[1] - _EYE_V) > 0.28
                                 and np.hypot(candidate[0], candidate[1] - _MOUTH_V) > 0.42
                                 and abs(candidate[0]) > 0.18)
            if clear_of_features:
                uv.append(candidate)
        points, visibility = _surface_dots(head, np.array(uv))
        radius = 0.011 * canvas.size
        for point, seen in zip(points, visibility, strict=True):
            canvas.dot(point, radius, _mix(palette.skin, (55.0, 32.0, 25.0), 0.85), "face", alpha=seen,
                       overlay="moles")


def _draw_nose(canvas: _Canvas, head: _Head, palette: _Palette) -> None:
    shadow = _scale(palette.skin, 0.72)
    ridge = np.array([[0.07, -0.08], [0.09, -0.22], [0.08, -0.32]])
    lifts = np.array([0.02, 0.1, 0.2])
    points = np.concatenate([head.face(point[None], lift) for point, lift in zip(ridge, lifts, strict=True)])
    base = head.face(_curve((0.1, -0.36), (0.0, -0.4), (-0.1, -0.36), 7), lift=0.12)
    canvas.stroke(np.concatenate([points, base]), shadow, canvas.thickness(0.009), "face")
    for side in (-1, 1):
        canvas.fill(head.face(_ellipse((side * 0.075, -0.37), 0.03, 0.018, 10), lift=0.1), shadow, "face")


def _draw_eyes(canvas: _Canvas, head: _Head, palette: _Palette, params: FaceParams) -> None:
    radius = float(head.width(np.array(_EYE_V)))
    iris_u = 0.095 / (head.half_width * radius)
    iris_v = 0.095 / _HEAD_HALF_HEIGHT
    lid = (45.0, 32.0, 30.0)
    for side in (-1, 1):
        centre = (side * _EYE_U, _EYE_V)
        white = _ellipse(centre, 0.19, 0.085, 24)
        canvas.fill(head.face(white), (246.0, 244.0, 240.0), "eyes")
        canvas.fill(head.face(_ellipse(centre, iris_u, iris_v, 16)), palette.iris, "eyes")
        canvas.fill(head.face(_ellipse(centre, 0.45 * iris_u, 0.45 * iris_v, 12)), (20.0, 16.0, 16.0), "eyes")
        glint = head.face(np.array([[centre[0] + 0.35 * iris_u, centre[1] + 0.35 * iris_v]]))[0]
        canvas.dot(glint, 0.006 * canvas.size, (255.0, 255.0, 255.0), "eyes")
        upper_lid = white[(white[:, 1] >= _EYE_V - 1e-9)]
        upper_lid = upper_lid[np.argsort(upper_lid[:, 0])]
        canvas.stroke(head.face(upper_lid), lid, canvas.thickness(0.012), "eyes")
        thickness = 0.03 + 0.04 * params.brow_thickness
        inner, outer = side * 0.2, side * 0.62
        lower = _curve((inner, 0.19), (side * 0.42, 0.25), (outer, 0.17))
        upper = _curve((outer, 0.17 + 0.5 * thickness), (side * 0.42, 0.25 + thickness), (inner, 0.19 + thickness))
        canvas.fill(head.face(np.concatenate([lower, upper]), lift=0.02), palette.brows, "hair")


def _draw_mouth(canvas: _Canvas, head: _Head, palette: _Palette, params: FaceParams) -> None:
    smile = params.smile
    half = (0.25 + 0.1 * params.mouth_width) * (1.0 + 0.15 * max(smile, 0.0))
    corner = _MOUTH_V + 0.1 * smile
    opening = 0.13 * _smoothstep(0.15, 1.0, smile)
    left, right = (-half, corner), (half, corner)
    upper_outer = _curve(left, (0.0, _MOUTH_V + 0.06), right)
    lower_outer = _curve(right, (0.0, _MOUTH_V - 0.07 - opening), left)
    canvas.fill(head.face(np.concatenate([upper_outer, lower_outer])), palette.lips, "mouth")
    seam = _curve(left, (0.0, _MOUTH_V + 0.005), right)
    if opening > 0.0:
        inner_lower = _curve(right, (0.0, _MOUTH_V - opening), left)
        canvas.fill(head.face(np.concatenate([seam, inner_lower])), (95.0, 35.0, 42.0), "mouth")
        teeth_edge = _curve(right, (0.0, _MOUTH_V - 0.55 * opening), left)
        canvas.fill(head.face(np.concatenate([seam, teeth_edge])), (246.0, 242.0, 236.0), "mouth")
    canvas.stroke(head.face(seam), _scale(palette.lips, 0.55), canvas.thickness(0.01), "mouth")


def _draw_earrings(canvas: _Canvas, head: _Head, params: FaceParams) -> None:
    style = EarringStyle(params.earring_style)
    if style == EarringStyle.NONE:
        return
    metal = _hsv(params.earring_hue, 0.65, 0.95)
    for side, centre, vertical, across, opacity in _ear_frames(head):
        lobe = centre - 0.2 * vertical + 0.02 * side * np.array([1.0, 0.0, 0.0])
        if style == EarringStyle.STUD:
            canvas.dot(head.project(lobe[None])[0], 0.018 * canvas.size, metal, "earrings", alpha=opacity)
        elif style == EarringStyle.HOOP:
            angle = np.linspace(0, 2 * np.pi, 20, endpoint=False)[:, None]
            ring = lobe - 0.12 * vertical + 0.12 * np.sin(angle) * vertical + 0.09 * np.cos(angle) * across
            canvas.stroke(head.project(ring), metal, canvas.thickness(0.014), "earrings", alpha=opacity, closed=True)
        else:
            drop = head.project(np.stack([lobe, lobe - 0.2 * vertical]))
            canvas.stroke(drop, _scale(metal, 0.8), canvas.thickness(0.008), "earrings", alpha=opacity)
            canvas.dot(drop[1], 0.025 * canvas.size, metal, "earrings", alpha=opacity)


def _draw_glasses(canvas: _Canvas, head: _Head, strength: float) -> None:
    if strength <= 0.0:
        return
    frame = (35.0, 32.0, 40.0)
    width = canvas.thickness(0.014)
    radius = head.half_width * float(head.width(np.array(_EYE_V)))
    half_u, half_v = 0.28 / radius, 0.21 / _HEAD_HALF_HEIGHT
    angle = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    squircle = np.stack([np.sign(np.cos(angle)) * np.abs(np.cos(angle)) ** 0.6,
                         np.sign(np.sin(angle)) * np.abs(np.sin(angle)) ** 0.6], axis=1)
    for side in (-1, 1):
        lens = head.face(np.array([side * _EYE_U, _EYE_V - 0.01]) + squircle * [half_u, half_v], lift=0.08)
        canvas.fill(lens, (190.0, 215.0, 235.0), alpha=0.3 * strength, overlay="glasses")
        canvas.stroke(lens, frame, width, alpha=strength, closed=True, overlay="glasses")
        hinge = head.face(np.array([[side * (_EYE_U + half_u), _EYE_V + 0.04]]), lift=0.08)
        ear = head.project(np.array([[side * (radius + 0.03), 0.02, -0.35]]))
        canvas.stroke(np.concatenate([hinge, ear]), frame, width, alpha=strength, overlay="glasses")
    bridge = head.face(_curve((-(_EYE_U - half_u), 0.03), (0.0, 0.08), (_EYE_U - half_u, 0.03), 6), lift=0.12)
    canvas.stroke(bridge, frame, width, alpha=strength, overlay="glasses")
