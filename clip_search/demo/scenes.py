"""The demo world's scenes: attributes, the seeded scene generator, the layout and the renderer.

Design. A scene is a flat background with 1-3 objects that all share one shape, colour and size, arranged
as a group in one of five regions of the canvas. Every scene is therefore described *exactly* by six
attributes (shape, colour, size, count, position, background) and a caption such as "three small red
stars at the top, on a sand background" is true of it and of nothing else. 5 shapes x 8 colours x 2 sizes x
3 counts x 5 positions x 3 backgrounds = 3600 combinations: small enough for a tiny CLIP trained for minutes
on a CPU to learn, varied enough that retrieval quality means something. Each scene carries a
`jitter_seed` that moves, scales, rotates and re-tints its objects a little, so that two scenes with the
same attributes are different images; the layout keeps every object inside the canvas and apart from the
others whatever the jitter (`layout`, checked by the tests).

Determinism. `generate_scenes(n, seed)` uses only `random.Random(seed)`, so the same seed gives the same
scenes on every machine; `render` draws with Pillow at 4x the target size and downsamples with LANCZOS, so
the same scene gives the same pixels (for one Pillow version). Training and evaluation use *disjoint seeds*
(`TRAIN_SEED`, `EVAL_SEED`, `STORE_SEED` below): evaluation scenes are new images, never ones trained on
(their attribute combinations do recur, as they must for a query to have matches).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
BACKGROUNDS: tuple[str, ...] = ("grey", "sand", "turquoise")
COUNTS: tuple[int, ...] = (1, 2, 3)
MAX_COUNT = 3

ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "count", "position", "background")

# Every colour is at least ~110 apart (Euclidean RGB) from every background, and the backgrounds from each
# other by ~120; no object colour is named like a background, so no caption word is ambiguous.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (250, 220, 30),
    "orange": (250, 130, 20),
    "purple": (150, 50, 200),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "sand": (222, 196, 150),
    "turquoise": (64, 190, 190),
}

# Suggested seeds: training, evaluation and the demo store draw from disjoint seeds.
TRAIN_SEED = 0
EVAL_SEED = 1_000_003
CALIBRATION_SEED = EVAL_SEED + 17  # held-out scenes that methods' cutoffs are chosen on, then reported on EVAL_SEED's
STORE_SEED = 2_000_003

# Layout, in canvas units (the canvas is the unit square, y pointing down). An object's radius is the
# radius of the circle its shape is inscribed in.
RADIUS: dict[str, float] = {"small": 0.09, "large": 0.14}
GROUP_JITTER = 0.015  # the whole group moves by up to this much in x and y
OBJECT_JITTER = 0.008  # each object moves by up to this much more in x and y
SCALE_JITTER = 0.04  # each object's radius is scaled by 1 +- this
ANGLE_JITTER = 15.0  # degrees each object is rotated by, at most (circles look the same)
TINT_JITTER = 10  # the object colour moves by up to this much per channel (one tint for the group)
BACKGROUND_TINT_JITTER = 6

_E, _F = 0.18, 0.82  # near and far edge anchors; slots 0.32 apart keep large objects apart
SLOTS: dict[str, dict[int, tuple[tuple[float, float], ...]]] = {
    "left": {1: ((_E, 0.5),), 2: ((_E, 0.33), (_E, 0.67)), 3: ((_E, _E), (_E, 0.5), (_E, _F))},
    "right": {1: ((_F, 0.5),), 2: ((_F, 0.33), (_F, 0.67)), 3: ((_F, _E), (_F, 0.5), (_F, _F))},
    "top": {1: ((0.5, _E),), 2: ((0.33, _E), (0.67, _E)), 3: ((_E, _E), (0.5, _E), (_F, _E))},
    "bottom": {1: ((0.5, _F),), 2: ((0.33, _F), (0.67, _F)), 3: ((_E, _F), (0.5, _F), (_F, _F))},
    "center": {1: ((0.5, 0.5),), 2: ((0.33, 0.5), (0.67, 0.5)), 3: ((0.5, 0.34), (0.33, 0.63), (0.67, 0.63))},
}

SUPERSAMPLE = 4


def _check(kind: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its shape, colour, size and the region of the canvas it sits in."""

    shape: str
    color: str
    size: str
    position: str

    def __post_init__(self) -> None:
        _check("shape", self.shape, SHAPES)
        _check("color", self.color, COLORS)
        _check("size", self.size, SIZES)
        _check("position", self.position, POSITIONS)


@dataclass(frozen=True)
class Query:
    """A set of attribute constraints; None means "any". A scene matches when it meets every constraint."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None
    count: int | None = None
    position: str | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in _ALLOWED.items():
            value = getattr(self, name)
            if value is not None:
                _check(name, value, allowed)

    def attributes(self) -> dict[str, str | int]:
        """The constraints that are set, in `ATTRIBUTES` order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_scene(cls, scene: Scene, keys: tuple[str, ...] | list[str] = ATTRIBUTES) -> Query:
        """The query that asks for `keys` of the scene's attributes (all of them by default)."""
        attrs = scene.attributes()
        return cls(**{k: attrs[k] for k in keys})


_ALLOWED: dict[str, tuple] = {
    "shape": SHAPES,
    "color": COLORS,
    "size": SIZES,
    "count": COUNTS,
    "position": POSITIONS,
    "background": BACKGROUNDS,
}
_VALUE_INDEX: dict[str, dict] = {name: {v: i for i, v in enumerate(allowed)} for name, allowed in _ALLOWED.items()}


@dataclass(frozen=True)
class Scene:
    """A background and 1-3 objects sharing shape, colour, size and position; `jitter_seed` varies the pixels."""

    background: str
    objects: tuple[SceneObject, ...]
    jitter_seed: int = 0

    def __post_init__(self) -> None:
        _check("background", self.background, BACKGROUNDS)
        if not 1 <= len(self.objects) <= MAX_COUNT:
            raise ValueError(f"a scene holds 1 to {MAX_COUNT} objects, not {len(self.objects)}")
        if len(set(self.objects)) != 1:
            raise ValueError("all objects of a scene share shape, colour, size and position")

    @classmethod
    def make(
        cls,
        shape: str,
        color: str,
        size: str,
        count: int,
        position: str,
        background: str,
        jitter_seed: int = 0,
    ) -> Scene:
        """A scene from its six attributes."""
        _check("count", count, COUNTS)
        obj = SceneObject(shape, color, size, position)
        return cls(background, (obj,) * count, jitter_seed)

    @property
    def shape(self) -> str:
        """The shape of every object."""
        return self.objects[0].shape

    @property
    def color(self) -> str:
        """The colour of every object."""
        return self.objects[0].color

    @property
    def size(self) -> str:
        """The size of every object."""
        return self.objects[0].size

    @property
    def position(self) -> str:
        """The region of the canvas the group sits in."""
        return self.objects[0].position

    @property
    def count(self) -> int:
        """How many objects the scene holds."""
        return len(self.objects)

    def attributes(self) -> dict[str, str | int]:
        """The six attributes, keyed as in `ATTRIBUTES`."""
        return {
            "shape": self.shape,
            "color": self.color,
            "size": self.size,
            "count": self.count,
            "position": self.position,
            "background": self.background,
        }

    def matches(self, query: Query) -> bool:
        """Whether the scene meets every constraint the query sets."""
        attrs = self.attributes()
        return all(attrs[k] == v for k, v in query.attributes().items())


# A fact a scene's caption can carry and its pixels do not: the named collection the scene belongs to, taken from its
# jitter seed (so adding it changed no scene, and no model trained on scenes ever saw it). Hybrid search is measured
# on queries that need it and a visual attribute at once (clip_search.demo.hybrid_eval).
COLLECTIONS: tuple[str, ...] = ("harbour", "orchard", "museum", "canyon")


def collection_of(scene: Scene) -> str:
    """The collection a scene belongs to (invisible in its pixels)."""
    return COLLECTIONS[scene.jitter_seed % len(COLLECTIONS)]


def _codes(items: Sequence[Scene] | Sequence[Query]) -> np.ndarray:
    """Each item's attributes as indices into their allowed values, in `ATTRIBUTES` order; -1 where a query sets none."""
    rows = [[-1 if getattr(it, k) is None else _VALUE_INDEX[k][getattr(it, k)] for k in ATTRIBUTES] for it in items]
    return np.array(rows, dtype=np.int8).reshape(len(items), len(ATTRIBUTES))


def truth_matrix(queries: Sequence[Query], scenes: Sequence[Scene]) -> np.ndarray:
    """queries x scenes booleans: whether each scene meets every constraint of each query (`Scene.matches`, at once)."""
    q, s = _codes(queries)[:, None, :], _codes(scenes)[None, :, :]
    return ((q == -1) | (q == s)).all(axis=-1)


def generate_scene(rng: random.Random) -> Scene:
    """One scene with every attribute drawn uniformly from `rng`."""
    shape = rng.choice(SHAPES)
    color = rng.choice(COLORS)
    size = rng.choice(SIZES)
    count = rng.choice(COUNTS)
    position = rng.choice(POSITIONS)
    background = rng.choice(BACKGROUNDS)
    jitter_seed = rng.getrandbits(31)
    return Scene.make(shape, color, size, count, position, background, jitter_seed)


def generate_scenes(n: int, seed: int) -> list[Scene]:
    """`n` scenes drawn from `random.Random(seed)`: the same seed gives the same list everywhere."""
    rng = random.Random(seed)
    return [generate_scene(rng) for _ in range(n)]


@dataclass(frozen=True)
class Placement:
    """Where and how one object is drawn: centre and radius in canvas units, rotation in degrees, RGB."""

    shape: str
    x: float
    y: float
    radius: float
    angle: float
    rgb: tuple[int, int, int]


def _tint(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _jitter(scene: Scene) -> tuple[tuple[int, int, int], tuple[Placement, ...]]:
    rng = random.Random(scene.jitter_seed)
    background = _tint(BACKGROUND_RGB[scene.background], rng, BACKGROUND_TINT_JITTER)
    rgb = _tint(COLOR_RGB[scene.color], rng, TINT_JITTER)
    gx = rng.uniform(-GROUP_JITTER, GROUP_JITTER)
    gy = rng.uniform(-GROUP_JITTER, GROUP_JITTER)
    placements = []
    for sx, sy in SLOTS[scene.position][scene.count]:
        x = sx + gx + rng.uniform(-OBJECT_JITTER, OBJECT_JITTER)
        y = sy + gy + rng.uniform(-OBJECT_JITTER, OBJECT_JITTER)
        radius = RADIUS[scene.size] * (1 + rng.uniform(-SCALE_JITTER, SCALE_JITTER))
        angle = rng.uniform(-ANGLE_JITTER, ANGLE_JITTER)
        placements.append(Placement(scene.shape, x, y, radius, angle, rgb))
    return background, tuple(placements)


def layout(scene: Scene) -> tuple[Placement, ...]:
    """The placements `render` draws, one per object, after the scene's own jitter."""
    return _jitter(scene)[1]


def _heart_outline(points: int = 72) -> tuple[tuple[float, float], ...]:
    """A heart of unit circumradius about its bounding-box centre, y pointing down."""
    raw = []
    for i in range(points):
        t = 2 * math.pi * i / points
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        raw.append((16 * math.sin(t) ** 3, -y))
    xs, ys = [p[0] for p in raw], [p[1] for p in raw]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    reach = max(math.hypot(x - cx, y - cy) for x, y in raw)
    return tuple((round((x - cx) / reach, 6), round((y - cy) / reach, 6)) for x, y in raw)


def _star_outline() -> tuple[tuple[float, float], ...]:
    pts = []
    for i in range(10):
        r = 1.0 if i % 2 == 0 else 0.45
        a = math.radians(-90 + 36 * i)
        pts.append((round(r * math.cos(a), 6), round(r * math.sin(a), 6)))
    return tuple(pts)


def _triangle_outline() -> tuple[tuple[float, float], ...]:
    return tuple((round(math.cos(math.radians(a)), 6), round(math.sin(math.radians(a)), 6)) for a in (-90, 30, 150))


_OUTLINES: dict[str, tuple[tuple[float, float], ...]] = {
    "square": ((-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)),
    "triangle": _triangle_outline(),
    "star": _star_outline(),
    "heart": _heart_outline(),
}
CIRCLE_FILL = 0.86  # a circle is drawn at this share of its radius, so its area is close to the square's


def _draw(draw: ImageDraw.ImageDraw, p: Placement, canvas: int) -> None:
    cx, cy, r = p.x * canvas, p.y * canvas, p.radius * canvas
    if p.shape == "circle":
        rr = r * CIRCLE_FILL
        draw.ellipse((round(cx - rr, 3), round(cy - rr, 3), round(cx + rr, 3), round(cy + rr, 3)), fill=p.rgb)
        return
    a = math.radians(p.angle)
    cos_a, sin_a = math.cos(a), math.sin(a)
    poly = [
        (round(cx + r * (u * cos_a - v * sin_a), 3), round(cy + r * (u * sin_a + v * cos_a), 3))
        for u, v in _OUTLINES[p.shape]
    ]
    draw.polygon(poly, fill=p.rgb)


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as a `size`x`size` RGB image, the same pixels every call."""
    background, placements = _jitter(scene)
    canvas = size * SUPERSAMPLE
    image = Image.new("RGB", (canvas, canvas), background)
    draw = ImageDraw.Draw(image)
    for p in placements:
        _draw(draw, p, canvas)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def render_pixels(scenes: Sequence[Scene], size: int, pixels: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """The scenes rendered and turned into model inputs by `pixels` (one image -> 3×H×W), as float16: what training
    keeps in memory. A module-level function, so a process pool can run it on every core."""
    return np.stack([pixels(render(scene, size)) for scene in scenes]).astype(np.float16)
