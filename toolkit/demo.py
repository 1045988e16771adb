"""The embedded demo dataset: a deterministic synthetic happy/sad photo folder.

`write_demo_data` draws faces whose mouth, brows and eyes differ by class: a smile, relaxed
arched brows and open eyes for happy; a frown, slanted brows with raised inner ends and
droopy, half-closed eyes for sad. Everything else (image size, skin, hair and background
colours, position, scale, rotation, file format, grayscale) is drawn from the same
distributions in both classes, so a model has to look at the face to tell them apart. The
faces are shaded (lit forehead and cheeks, dark eye sockets and brows, a nose shadow) so
that face detectors find most of them: the scan's BlazeFace finds all of the default set,
OpenCV's Haar frontal-face cascade (which they were first drawn for) 95%.

Next to the clean images it writes the defects real scraped folders have: a PNG named
.jpg, small thumbnails, an SVG, an HTML error page saved as .jpg, a truncated JPEG, an
exact duplicate and the same image in both classes. `DemoData.defects` says which file
carries which.

Every file is rendered in memory first, so the answer is the same whether or not anything
is written, and the same arguments give byte-identical files on every run.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.errors import DataRootError

log = logging.getLogger(__name__)

CLASSES = ("happy", "sad")
#: Files smaller than this many bytes are listed under the "small_file" defect.
SMALL_FILE_BYTES = 9216
#: The defect kinds `DemoData.defects` has a key for, in this order.
DEFECT_KINDS = (
    "png_named_jpg",
    "small_file",
    "svg",
    "text_named_jpg",
    "truncated_jpeg",
    "exact_duplicate",
    "label_conflict",
)


@dataclass(frozen=True)
class DemoData:
    """The demo folder: where it is, whether this call wrote it, its files and their defects."""

    root: Path
    created: bool
    n_files: int
    defects: dict[str, list[str]]


def write_demo_data(root: Path, n_per_class: int = 60, seed: int = 0) -> DemoData:
    """Write the synthetic happy/sad demo set under root, unless root already holds classes."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataRootError(root, "is not a folder")
    files, defects = _render_files(n_per_class, seed)
    occupied = [root / label for label in CLASSES if _is_occupied(root / label)]
    if occupied:
        log.info("%s already holds files; the demo set was not written", occupied[0])
        return DemoData(root=root, created=False, n_files=len(files), defects=defects)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as f:  # "x": never overwrite a file that appeared meanwhile
            f.write(data)
    log.info("wrote %d demo files under %s", len(files), root)
    return DemoData(root=root, created=True, n_files=len(files), defects=defects)


def _is_occupied(path: Path) -> bool:
    """True if path exists and is anything but an empty folder (so it may hold user data)."""
    if not path.exists() and not path.is_symlink():
        return False
    return not path.is_dir() or any(path.iterdir())


# --- the folder: clean images, then the defects ---------------------------------------------

# Formats of the clean images by index modulo 20, in both classes alike, so the format says
# nothing about the class: mostly JPEG (.jpg, and .jpeg for 4 in 20), 3 in 20 PNG, 1 BMP.
_EXT_SLOTS = {
    1: "jpeg",
    5: "jpeg",
    10: "jpeg",
    15: "jpeg",
    3: "png",
    8: "png",
    16: "png",
    13: "bmp",
}
# Every 6th clean image of each class is grayscale: the same share in both classes.
_GRAY_EVERY = 6
_GRAY_OFFSET = 4

# Random streams, so that adding images or extras never changes the ones before them.
_STREAM_IMAGE, _STREAM_NAME, _STREAM_EXTRA = 0, 1, 2

# The defect files: fixed, innocuous names like those a scraper leaves behind.
_PNG_NAMED_JPG = "happy/images23.jpg"
_THUMBNAILS = {
    "happy/download.jpg": ("happy", 64),
    "happy/smiley-kid-icon.jpg": ("happy", 88),
    "sad/unnamed.jpg": ("sad", 72),
    "sad/sad-boy-avatar.jpg": ("sad", 96),
}
_SVG = "happy/smiley-face-vector.svg"
_TEXT_NAMED_JPG = "sad/depositphotos_51893457-stock-photo-sad-man.jpg"
_TRUNCATED_JPEG = "sad/crying-girl-portrait.jpg"
_DUPLICATE = "happy/cheerful-young-woman.jpg"  # the same bytes as the first clean happy image
_CONFLICT = ("happy/portrait-of-a-man.jpg", "sad/man-portrait-closeup.jpg")
_RESERVED = {_PNG_NAMED_JPG, *_THUMBNAILS, _SVG, _TEXT_NAMED_JPG, _TRUNCATED_JPEG, _DUPLICATE}
_RESERVED |= set(_CONFLICT)

_FORBIDDEN_PAGE = b"""<html>
<head><title>403 Forbidden</title></head>
<body>
<center><h1>403 Forbidden</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

_SMILEY_SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">
  <circle cx="128" cy="128" r="120" fill="#ffd54f" stroke="#c79100" stroke-width="6"/>
  <ellipse cx="88" cy="96" rx="14" ry="20" fill="#3e2723"/>
  <ellipse cx="168" cy="96" rx="14" ry="20" fill="#3e2723"/>
  <path d="M 64 150 Q 128 218 192 150" fill="none" stroke="#3e2723" stroke-width="12"
        stroke-linecap="round"/>
</svg>
"""


def _render_files(n_per_class: int, seed: int) -> tuple[dict[str, bytes], dict[str, list[str]]]:
    """Every file of the demo set as {POSIX path relative to root: bytes}, and the defects."""
    files: dict[str, bytes] = {}
    clean: list[str] = []
    for class_index, label in enumerate(CLASSES):
        name_rng = np.random.default_rng([seed, _STREAM_NAME, class_index])
        taken = set(_RESERVED)
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, _STREAM_IMAGE, class_index, i])
            ext = _EXT_SLOTS.get(i % 20, "jpg")
            rel = _unique_name(name_rng, label, ext, taken)
            image = _render_photo(rng, label)
            if i % _GRAY_EVERY == _GRAY_OFFSET:
                image = image.convert("L")
            files[rel] = _encode(image, ext, quality=int(rng.integers(86, 97)))
            clean.append(rel)

    def extra_rng(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, _STREAM_EXTRA, k])

    rng = extra_rng(0)
    files[_PNG_NAMED_JPG] = _encode(_render_photo(rng, "happy"), "png")
    for k, (rel, (label, side)) in enumerate(_THUMBNAILS.items(), start=1):
        rng = extra_rng(k)
        files[rel] = _encode(_render_thumbnail(rng, label, side), "jpg", quality=75)
    files[_SVG] = _SMILEY_SVG
    files[_TEXT_NAMED_JPG] = _FORBIDDEN_PAGE
    rng = extra_rng(10)
    whole = _encode(_render_photo(rng, "sad"), "jpg", quality=90)
    files[_TRUNCATED_JPEG] = whole[: len(whole) // 2]  # a download cut off halfway
    first_happy = clean[0]  # a .jpg: slot 0 of _EXT_SLOTS
    files[_DUPLICATE] = files[first_happy]
    rng = extra_rng(11)
    conflict = _encode(_render_photo(rng, "sad"), "jpg", quality=85)
    for rel in _CONFLICT:
        files[rel] = conflict

    defects = {
        "png_named_jpg": [_PNG_NAMED_JPG],
        "small_file": sorted(rel for rel, data in files.items() if len(data) < SMALL_FILE_BYTES),
        "svg": [_SVG],
        "text_named_jpg": [_TEXT_NAMED_JPG],
        "truncated_jpeg": [_TRUNCATED_JPEG],
        "exact_duplicate": sorted([first_happy, _DUPLICATE]),
        "label_conflict": sorted(_CONFLICT),
    }
    return dict(sorted(files.items())), defects


_MOODS = {
    "happy": ("happy", "smiling", "cheerful", "laughing", "joyful", "smiley"),
    "sad": ("sad", "unhappy", "crying", "upset", "lonely", "depressed"),
}
_SUBJECTS = ("woman", "man", "girl", "boy", "child", "person", "face", "teen", "senior-man")
_SUFFIXES = ("portrait", "closeup", "headshot", "face", "photo", "isolated", "emotion")
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _unique_name(rng: np.random.Generator, label: str, ext: str, taken: set[str]) -> str:
    """A scraped-looking file name under label/ that is not taken yet (and take it)."""
    while True:
        rel = f"{label}/{_file_stem(rng, label)}.{ext}"
        if rel not in taken:
            taken.add(rel)
            return rel


def _file_stem(rng: np.random.Generator, label: str) -> str:
    """One file name stem in the style of an image search download."""

    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    def num(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi))

    template = num(0, 8)
    if template == 0:
        return f"images{num(1, 100)}"
    if template == 1:
        return f"{pick(_MOODS[label])}-{pick(_SUBJECTS)}-{pick(_SUFFIXES)}"
    if template == 2:
        topic = f"{pick(_MOODS[label])}-{pick(_SUBJECTS)}"
        return f"depositphotos_{num(10**7, 10**9)}-stock-photo-{topic}"
    if template == 3:
        return f"istockphoto-{num(10**8, 2 * 10**9)}-612x612"
    if template == 4:
        return f"pexels-photo-{num(10**5, 10**7)}"
    if template == 5:
        return f"{pick(_MOODS[label])}_{pick(_SUBJECTS)}_{num(1000, 10000)}"
    if template == 6:
        token = "".join(_ALNUM[i] for i in rng.integers(len(_ALNUM), size=32))
        return f"1000_F_{num(10**8, 10**9)}_{token}"
    return f"photo-{num(14 * 10**11, 17 * 10**11)}-{num(0, 16**12):012x}"


def _encode(image: Image.Image, ext: str, quality: int = 90) -> bytes:
    """The bytes of image saved in the format its extension names."""
    out = io.BytesIO()
    if ext in ("jpg", "jpeg"):
        image.save(out, format="JPEG", quality=quality)
    elif ext == "png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="BMP")
    return out.getvalue()


def _render_photo(rng: np.random.Generator, label: str) -> Image.Image:
    """A face of the given class on a canvas with sides of 140-400 px, not always square."""
    h, w = int(rng.integers(140, 401)), int(rng.integers(140, 401))
    if rng.random() < 0.15:  # some square crops, as stock sites serve
        w = h
    return _render_face(rng, label, h, w)


def _render_thumbnail(rng: np.random.Generator, label: str, side: int) -> Image.Image:
    """A small square face, drawn at twice the size and scaled down like a thumbnail."""
    big = _render_face(rng, label, 2 * side, 2 * side)
    return big.resize((side, side), Image.Resampling.LANCZOS)


# --- drawing: masks in face coordinates ----------------------------------------------------
#
# A face lives in its own coordinates (u, v): u runs from -1 to 1 across the face, v points
# down, and the face outline is u**2 + (v / _FACE_ASPECT)**2 = 1. Rotation, position and
# scale are folded into the mapping from pixels to (u, v), so every feature is a closed-form
# mask, and each is computed only in the window of pixels it can touch.

_FACE_ASPECT = 1.3


class _Canvas:
    """An H x W x 3 float image and the mapping of its pixels to face coordinates."""

    def __init__(self, img: np.ndarray, cx: float, cy: float, half_w: float, angle: float):
        self.img = img
        self.cx, self.cy, self.half_w = cx, cy, half_w
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.px = 1.0 / half_w  # one pixel, in face units: the antialiasing width

    def window(
        self, u0: float, u1: float, v0: float, v1: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pixels (a view) covering the face-coordinate box, and their u and v."""
        us = np.array([u0, u1, u1, u0])
        vs = np.array([v0, v0, v1, v1])
        xs = self.cx + self.half_w * (self.cos * us - self.sin * vs)
        ys = self.cy + self.half_w * (self.sin * us + self.cos * vs)
        h, w = self.img.shape[:2]
        x0, x1 = max(int(xs.min()) - 1, 0), min(math.ceil(xs.max()) + 1, w)
        y0, y1 = max(int(ys.min()) - 1, 0), min(math.ceil(ys.max()) + 1, h)
        x1, y1 = max(x0, x1), max(y0, y1)
        dy, dx = np.mgrid[y0:y1, x0:x1] + 0.5
        dx -= self.cx
        dy -= self.cy
        u = (self.cos * dx + self.sin * dy) / self.half_w
        v = (-self.sin * dx + self.cos * dy) / self.half_w
        return self.img[y0:y1, x0:x1], u, v


def _coverage(dist: np.ndarray, px: float) -> np.ndarray:
    """Antialiased coverage of a shape from its (approximate) signed distance."""
    return np.clip(0.5 - dist / px, 0.0, 1.0)


def _ellipse(
    u: np.ndarray, v: np.ndarray, cu: float, cv: float, a: float, b: float, px: float
) -> np.ndarray:
    """Coverage of an axis-aligned ellipse centred on (cu, cv) with half-axes a and b."""
    r = np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2)
    return _coverage((r - 1.0) * min(a, b), px)


def _blob(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    """A soft Gaussian bump, 1 at its centre: for shading, not for shapes."""
    return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def _curve_y(t: np.ndarray, cv: float, bend: float, tilt: float) -> np.ndarray:
    """The parabola v = cv + bend * t**2 + tilt * t, for t in [-1, 1] along a feature."""
    return cv + bend * t**2 + tilt * t


def _stroke(
    u: np.ndarray,
    v: np.ndarray,
    cu: float,
    hw: float,
    curve: tuple[float, float, float],
    thick: float,
    px: float,
) -> np.ndarray:
    """Coverage of a thick parabolic stroke (a lip line, a brow) thinning towards its ends."""
    t = (u - cu) / hw
    cv, bend, tilt = curve
    slope = (2 * bend * t + tilt) / hw
    dist = np.abs(v - _curve_y(t, cv, bend, tilt)) / np.sqrt(1 + slope**2)
    half = thick * (1 - 0.5 * np.clip(t, -1, 1) ** 2) / 2
    beyond = (np.abs(t) - 1) * hw
    return _coverage(np.maximum(dist - half, beyond), px)


def _between(
    u: np.ndarray,
    v: np.ndarray,
    cu: float,
    hw: float,
    top: tuple[float, float, float],
    bottom: tuple[float, float, float],
    px: float,
) -> np.ndarray:
    """Coverage of the region between two parabolas (an open mouth, a row of teeth)."""
    t = (u - cu) / hw
    dist = np.maximum(_curve_y(t, *top) - v, v - _curve_y(t, *bottom))
    return _coverage(np.maximum(dist, (np.abs(t) - 1) * hw), px)


def _paint(img: np.ndarray, mask: np.ndarray, colour: np.ndarray | tuple[float, ...]) -> None:
    """Blend colour into img (H x W x 3 floats, in place) where mask covers it."""
    m = mask[..., None]
    img += m * (np.asarray(colour, dtype=np.float32) - img)


# --- one face -------------------------------------------------------------------------------

_SKIN = np.array(
    [
        (255, 226, 204),
        (246, 208, 176),
        (234, 190, 150),
        (222, 170, 125),
        (198, 140, 96),
        (168, 112, 74),
        (132, 86, 58),
        (250, 214, 90),  # cartoon yellow
    ],
    dtype=np.float64,
)
_HAIR = np.array(
    [(30, 22, 18), (60, 40, 28), (100, 70, 40), (170, 130, 70), (140, 60, 30), (120, 120, 120)],
    dtype=np.float64,
)
_IRIS = np.array([(70, 45, 25), (40, 30, 25), (60, 100, 140), (70, 110, 70)], dtype=np.float64)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A solid, gradient or blotchy textured background, H x W x 3 floats."""
    kind = int(rng.integers(5))
    c0 = rng.uniform(20, 240, 3)
    if kind == 0:  # solid
        return np.broadcast_to(c0.astype(np.float32), (h, w, 3)).copy()
    c1 = rng.uniform(20, 240, 3)
    if kind == 1:  # linear gradient at any angle
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:h, 0:w]
        proj = x * math.cos(angle) + y * math.sin(angle)
        s = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    else:  # a random grid upsampled smoothly: foliage out of focus, a wall, fabric
        cells = int(rng.integers(3, 12)) if kind < 4 else max(h, w) // int(rng.integers(3, 7))
        coarse = rng.random((cells, cells)).astype(np.float32)
        smooth = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        s = np.clip(np.asarray(smooth, dtype=np.float64), 0.0, 1.0)
    return (c0 * (1 - s[..., None]) + c1 * s[..., None]).astype(np.float32)


@dataclass(frozen=True)
class _Look:
    """The random traits of one face that several drawing steps share."""

    skin: np.ndarray
    hair: np.ndarray | None
    eye_u: float
    eye_v: float
    mouth_v: float


def _render_face(rng: np.random.Generator, label: str, h: int, w: int) -> Image.Image:
    """Draw one face of the given class on an h x w canvas."""
    happy = label == "happy"
    img = _background(rng, h, w)

    # Pose: the face's half-width in pixels, its centre and a small rotation.
    face_frac = rng.uniform(0.45, 0.8)  # face height over the shorter side
    half_w = face_frac * min(h, w) / (2 * _FACE_ASPECT)
    cx = rng.uniform(1.25 * half_w, w - 1.25 * half_w)
    cy = rng.uniform(1.45 * half_w, max(1.45 * half_w, h - 1.35 * half_w))
    canvas = _Canvas(img, cx, cy, half_w, math.radians(rng.uniform(-12, 12)))

    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.05, 3), 0, 255)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.85, 1.15)
    look = _Look(
        skin=skin,
        hair=hair if rng.random() < 0.8 else None,
        eye_u=rng.uniform(0.33, 0.4),
        eye_v=-0.12 + rng.uniform(-0.04, 0.04),
        mouth_v=rng.uniform(0.62, 0.72),
    )
    _draw_head(canvas, rng, look)
    _draw_eyes(canvas, rng, look, happy)
    _draw_brows(canvas, rng, look, happy)
    _draw_mouth(canvas, rng, look, happy)
    if not happy and rng.random() < 0.2:  # a tear
        side = 1 if rng.random() < 0.5 else -1
        pix, u, v = canvas.window(-1, 1, -0.2, 0.5)
        tear = _ellipse(u, v, side * (look.eye_u + 0.05), look.eye_v + 0.3, 0.04, 0.07, canvas.px)
        _paint(pix, tear * 0.6, (170, 210, 250))

    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(3, 8)  # sensor grain
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))


def _draw_head(canvas: _Canvas, rng: np.random.Generator, look: _Look) -> None:
    """Shoulders, neck, hair, ears and the shaded face, without its expression."""
    px, skin, hair = canvas.px, look.skin, look.hair
    pix, u, v = canvas.window(-0.5, 0.5, 0.8, 2.7)
    _paint(pix, _coverage(np.maximum(np.abs(u) - 0.42, 0.9 - v), px), skin * 0.78)
    # Shoulders, then a torso widening towards the bottom of the frame.
    pix, u, v = canvas.window(-12, 12, 1.5, 40)
    shirt = rng.uniform(20, 230, 3)
    _paint(pix, _ellipse(u, v, 0, 2.6, 1.9, 1.0, px), shirt)
    _paint(pix, _coverage(np.maximum(np.abs(u) - 1.9 - 0.25 * (v - 2.6), 2.6 - v), px), shirt)
    if hair is not None:
        pix, u, v = canvas.window(-1.2, 1.2, -1.55, 1.35)
        length = rng.uniform(0.1, 1.2)
        back = _ellipse(u, v, 0, -0.1, 1.15, 1.42, px) * _coverage(v - length, px)
        _paint(pix, back, hair)
    for side in (-1, 1):
        pix, u, v = canvas.window(side * 0.98 - 0.15, side * 0.98 + 0.15, -0.26, 0.22)
        _paint(pix, _ellipse(u, v, side * 0.98, -0.02, 0.13, 0.22, px), skin * 0.85)

    # Haar features key on these contrasts: a lit forehead, cheeks and nose bridge against
    # darker eye sockets, a nose shadow and a darker rim.
    pix, u, v = canvas.window(-1.05, 1.05, -1.36, 1.36)
    light = rng.uniform(-0.3, 0.3)  # where the light comes from, left (-) to right (+)
    r = np.sqrt(u**2 + (v / _FACE_ASPECT) ** 2)
    shade = 1.0 - 0.28 * np.clip(r, 0, 1) ** 4 + 0.1 * light * u
    shade += 0.14 * _blob(u, v, 0, -0.75, 0.55, 0.28)
    shade += 0.10 * (_blob(u, v, -0.45, 0.32, 0.2, 0.16) + _blob(u, v, 0.45, 0.32, 0.2, 0.16))
    shade += 0.10 * _blob(u, v, 0, 0.02, 0.07, 0.26)
    socket = rng.uniform(0.35, 0.5)
    for side in (-1, 1):
        shade -= socket * _blob(u, v, side * look.eye_u, look.eye_v - 0.03, 0.2, 0.12)
    nose_side = 1 if light < 0 else -1
    shade -= 0.25 * _blob(u, v, nose_side * 0.09, 0.12, 0.05, 0.18)
    shade -= 0.30 * _blob(u, v, 0, 0.36, 0.13, 0.04)
    shade -= 0.2 * _blob(u, v, 0, look.mouth_v + 0.2, 0.2, 0.05)
    face = _ellipse(u, v, 0, 0, 1.0, _FACE_ASPECT, px)
    _paint(pix, face, skin * np.clip(shade, 0.2, 1.3)[..., None])
    if hair is not None:
        fringe_v = rng.uniform(-0.95, -0.7)
        scalp = _ellipse(u, v, 0, 0, 1.03, _FACE_ASPECT + 0.03, px)
        _paint(pix, scalp * _coverage(v - (fringe_v + 0.35 * u**2), px), hair)
    pix, u, v = canvas.window(-0.15, 0.15, 0.28, 0.38)
    for side in (-1, 1):  # nostrils
        _paint(pix, _ellipse(u, v, side * 0.08, 0.33, 0.045, 0.025, px) * 0.7, skin * 0.35)


def _draw_eyes(canvas: _Canvas, rng: np.random.Generator, look: _Look, happy: bool) -> None:
    """Open eyes (happy) or droopy, half-closed eyes (sad)."""
    px, eye_v = canvas.px, look.eye_v
    a = rng.uniform(0.14, 0.18)
    b = a * rng.uniform(0.5, 0.62)
    iris = _IRIS[rng.integers(len(_IRIS))]
    gaze = rng.uniform(-0.03, 0.03)
    # The upper lid covers this share of the eye: a sliver at most when happy, half or
    # more when sad, and then it droops towards the outer corner.
    cover = rng.uniform(0.0, 0.1) if happy else rng.uniform(0.45, 0.7)
    droop = 0.0 if happy else 0.05
    for side in (-1, 1):
        cu = side * look.eye_u
        pix, u, v = canvas.window(cu - 0.25, cu + 0.25, eye_v - 0.25, eye_v + 0.25)
        white = _ellipse(u, v, cu, eye_v, a, b, px)
        _paint(pix, white, (238, 236, 230))
        _paint(pix, white * _ellipse(u, v, cu + gaze, eye_v, b * 1.1, b * 1.1, px), iris)
        _paint(pix, white * _ellipse(u, v, cu + gaze, eye_v, b * 0.5, b * 0.5, px), (12, 10, 10))
        lid_v = eye_v - b + 2 * b * cover
        lid_curve = (lid_v, (eye_v - lid_v) * 0.8, side * droop)
        lid = white * _coverage(v - _curve_y((u - cu) / a, *lid_curve), px)
        _paint(pix, lid, look.skin * 0.72)
        _paint(pix, _stroke(u, v, cu, a * 1.05, lid_curve, 0.035, px) * 0.9, (25, 18, 15))
        if happy:
            glint = _ellipse(u, v, cu + gaze + b * 0.3, eye_v - b * 0.3, 0.02, 0.02, px)
            _paint(pix, glint, (255, 255, 255))
            crease = _stroke(u, v, cu, a * 0.9, (eye_v - b - 0.05, 0.04, 0.0), 0.015, px)
            _paint(pix, crease * 0.5, look.skin * 0.5)
        else:
            bag = _stroke(u, v, cu, a * 0.8, (eye_v + b + 0.05, -0.03, 0.0), 0.02, px)
            _paint(pix, bag * 0.4, look.skin * 0.55)


def _draw_brows(canvas: _Canvas, rng: np.random.Generator, look: _Look, happy: bool) -> None:
    """Relaxed, arched brows (happy) or slanted brows with raised inner ends (sad)."""
    thick = rng.uniform(0.045, 0.07)
    hw = rng.uniform(0.19, 0.24)
    if happy:
        cv = look.eye_v - rng.uniform(0.22, 0.3)
        bend, slant = rng.uniform(0.04, 0.08), rng.uniform(-0.02, 0.02)
    else:
        cv = look.eye_v - rng.uniform(0.2, 0.26)
        bend, slant = rng.uniform(-0.01, 0.03), rng.uniform(0.07, 0.11)
    base = look.hair if look.hair is not None else look.skin * 0.5
    colour = base * 0.5 + 10
    for side in (-1, 1):
        cu = side * (look.eye_u + 0.02)
        pix, u, v = canvas.window(cu - 0.3, cu + 0.3, cv - 0.2, cv + 0.2)
        # tilt = side * slant lowers the outer end (t = side) and raises the inner one.
        _paint(pix, _stroke(u, v, cu, hw, (cv, bend, side * slant), thick, px=canvas.px), colour)


def _draw_mouth(canvas: _Canvas, rng: np.random.Generator, look: _Look, happy: bool) -> None:
    """A smile (happy) or a frown (sad), closed or open."""
    px, mv = canvas.px, look.mouth_v
    hw = rng.uniform(0.3, 0.42)
    lip = np.clip(look.skin * np.array([0.75, 0.45, 0.45]) + np.array([20, 0, 0]), 0, 255)
    depth = rng.uniform(0.1, 0.18)
    pix, u, v = canvas.window(-0.5, 0.5, mv - 0.3, mv + 0.3)
    if rng.random() < 0.45:
        if happy:  # open, corners up: a D lying on its flat side
            top = (mv - 0.02, -depth * 0.6, 0.0)
            bottom = (mv + depth, -depth * 1.6, 0.0)
        else:  # open, corners down: an arch
            top = (mv - depth, depth * 1.5, 0.0)
            bottom = (mv + 0.02, depth * 0.5, 0.0)
        inside = _between(u, v, 0, hw, top, bottom, px)
        _paint(pix, inside, (70, 20, 25))
        teeth = (top[0] + 0.05, top[1], 0.0)
        _paint(pix, inside * _between(u, v, 0, hw, top, teeth, px), (240, 236, 225))
        _paint(pix, _stroke(u, v, 0, hw, top, 0.03, px), lip)
        _paint(pix, _stroke(u, v, 0, hw, bottom, 0.045, px), lip)
    else:
        curve = (mv, -depth if happy else depth, 0.0)
        _paint(pix, _stroke(u, v, 0, hw, curve, rng.uniform(0.035, 0.06), px), lip)
