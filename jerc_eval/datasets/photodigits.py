"""PhotoDigits: the embedded default dataset, built offline from material that ships with installed packages.

Handwritten digits (scikit-learn's ``load_digits``: 1,797 scans of 8x8 pixels, 16 grey levels, by 43
writers) are enlarged, slightly rotated, coloured and alpha-composited onto random crops of the photographs and
textures bundled with scikit-image and scikit-learn. Class signal (the digit's shape) thus competes with
high-variance natural texture, the regime the paper is about.

Rules that make the numbers mean something:
- digit *samples* are split once (stratified) into a train and a test pool; a test image never reuses a
  digit sample seen in training;
- every random draw comes from ``numpy.random.default_rng`` seeded by (dataset seed, split), so the same
  version and seed give byte-identical arrays on any machine; the fingerprint (sha256 of the arrays) is
  recorded in results.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

VERSION = "1"
IMAGE_SIZE = 64  # the render
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(i) for i in range(10))
DEFAULT_SIZES = {"train": 6000, "test": 2000}
TEST_FRACTION = 0.3  # of digit samples held out for the test pool

# Photographs shipped inside the scikit-image wheel (skimage/data/*.png|jpg) and scikit-learn's two samples.
_SKIMAGE_COLOR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "stereo_motorcycle")
_SKIMAGE_GRAY = ("brick", "grass", "gravel", "camera", "moon", "coins", "cell", "clock", "text", "page")


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    digit_ids: np.ndarray  # (N,) index into sklearn's digits, for provenance and leakage checks

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


@lru_cache(maxsize=1)
def _backgrounds() -> tuple[np.ndarray, ...]:
    """Load every bundled photograph as float32 RGB in [0, 1] (no network: all ship in the wheels)."""
    import skimage.data as skd
    from sklearn.datasets import load_sample_images

    out = []
    for name in _SKIMAGE_COLOR:
        im = getattr(skd, name)()
        if isinstance(im, tuple):  # stereo_motorcycle returns (left, right, disparity)
            im = im[0]
        out.append(np.asarray(im[..., :3], dtype=np.float32) / 255.0)
    for name in _SKIMAGE_GRAY:
        im = np.asarray(getattr(skd, name)(), dtype=np.float32)
        im = im / 255.0 if im.max() > 1 else im
        out.append(np.repeat(im[..., None], 3, axis=2))
    out.extend(np.asarray(im, dtype=np.float32) / 255.0 for im in load_sample_images().images)
    return tuple(out)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def load_material() -> None:
    """Load (and cache in this process) the photographs and digit scans every render draws from."""
    _backgrounds()
    _digits()


def digit_pools(seed: int = 0) -> dict[str, np.ndarray]:
    """Split digit sample indices per class into disjoint train/test pools (stratified, seeded)."""
    _, target = _digits()
    rng = np.random.default_rng([seed, 7])
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(target == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * TEST_FRACTION))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def _background_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image

    bgs = _backgrounds()
    im = bgs[rng.integers(len(bgs))]
    h, w = im.shape[:2]
    side = int(rng.integers(size, max(size + 1, int(min(h, w) * 0.6))))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = im[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    pil = Image.fromarray((crop * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    out = np.asarray(pil, dtype=np.float32) / 255.0
    if np.ptp(out.reshape(-1, 3).mean(0)) < 0.02:  # grey texture: tint it so colour carries no label shortcut
        out = out * rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    return out


def _digit_alpha(rng: np.random.Generator, digit: np.ndarray, size: int) -> tuple[np.ndarray, int, int]:
    """Enlarge an 8x8 digit to a smooth alpha mask of random size, rotation and position."""
    from PIL import Image

    side = int(rng.integers(int(size * 0.55), int(size * 0.8) + 1))
    pil = Image.fromarray((digit * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
    pil = pil.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    alpha = np.clip((np.asarray(pil, dtype=np.float32) / 255.0 - 0.12) * 1.6, 0, 1)  # drop the scans' faint box
    y, x = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
    return alpha, y, x


def _layers(rng: np.random.Generator, digit: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image's layers: background (size,size,3), digit coverage (size,size) and stroke colour (3,)."""
    bg = _background_crop(rng, size)
    alpha, y, x = _digit_alpha(rng, digit, size)
    s = alpha.shape[0]
    lum = float(bg[y:y + s, x:x + s].mean())
    # stroke colour: random hue, lightness pushed away from the local background so the digit stays visible
    base = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    target = rng.uniform(0.0, 0.25) if lum > 0.5 else rng.uniform(0.75, 1.0)
    colour = np.clip(base * 0.35 + target * 0.65 + (target - base.mean()) * 0.35, 0, 1).astype(np.float32)
    cover = np.zeros((size, size), np.float32)
    cover[y:y + s, x:x + s] = alpha * float(rng.uniform(0.8, 1.0))
    return bg, cover, colour


def composite(bg: np.ndarray, cover: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Alpha-composite a digit (coverage + colour) over a background; float [0,1] in, uint8 out."""
    a = cover[..., None]
    return np.clip(np.round((bg * (1 - a) + colour * a) * 255), 0, 255).astype(np.uint8)


def _compose(rng: np.random.Generator, digit: np.ndarray, size: int) -> np.ndarray:
    return composite(*_layers(rng, digit, size))


def build_split(split: str, n: int | None = None, seed: int = 0, size: int = IMAGE_SIZE,
                stored_size: int | None = None) -> Split:
    """Render one split deterministically.

    Images cycle through the split's digit pool in a seeded permutation so every digit sample is used about
    equally often; each use gets its own background, scale, rotation, position and colour. ``stored_size``
    (smaller than ``size``) downsamples the render with the encoders' own resize (:func:`downsample`), so the
    stored images are the pixels a zoo encoder sees (up to rounding to uint8).
    """
    if split not in DEFAULT_SIZES:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(DEFAULT_SIZES)}")
    n = DEFAULT_SIZES[split] if n is None else n
    digits, target = _digits()
    pool = digit_pools(seed)[split]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, size])
    order = np.concatenate([rng.permutation(pool) for _ in range(n // len(pool) + 1)])[:n]
    images = np.stack([_compose(rng, digits[i], size) for i in order])
    if stored_size is not None and stored_size != size:
        images = downsample(images, stored_size)
    return Split(images=images, labels=target[order].copy(), digit_ids=order.astype(np.int64))


def build_layers(split: str, n: int | None = None, seed: int = 0, size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """The same draws as :func:`build_split`, kept as layers: ``cover`` (N,H,W) float digit coverage, ``colour``
    (N,3) stroke colour, ``labels``. ``composite(bg, cover[i], colour[i])`` re-renders image ``i`` over any
    background. Zoo pretraining uses it for background-swap augmentation (the renderer's exact mask stands in for
    the saliency masks such augmentations use on real photos); labels are never used there."""
    n = DEFAULT_SIZES[split] if n is None else n
    digits, target = _digits()
    pool = digit_pools(seed)[split]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, size])
    order = np.concatenate([rng.permutation(pool) for _ in range(n // len(pool) + 1)])[:n]
    covers, colours = [], []
    for i in order:
        _, cover, colour = _layers(rng, digits[i], size)
        covers.append(cover)
        colours.append(colour)
    return {"cover": np.stack(covers), "colour": np.stack(colours), "labels": target[order].copy()}


def background_bank(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    """``n`` background crops (N,H,W,3) float32 in [0,1] drawn like the dataset's, from their own seeded stream."""
    rng = np.random.default_rng([seed, 3, size])
    return np.stack([_background_crop(rng, size) for _ in range(n)])


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 NHWC -> uint8 NHWC at ``size`` px through ``jerc_eval.features.resize`` (antialiased bicubic, the
    resize evaluation and zoo pretraining apply), rounded to the nearest grey level."""
    import torch

    from ..features import resize

    out = []
    for i in range(0, len(images), 1000):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + 1000])).permute(0, 3, 1, 2).float().div_(255.0)
        y = resize(x, size).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        out.append(y.permute(0, 2, 3, 1).contiguous().numpy())
    return np.concatenate(out)


def provenance(stored_size: int = IMAGE_SIZE) -> dict:
    return {
        "name": "photodigits",
        "version": VERSION,
        "render_size": IMAGE_SIZE,
        "image_size": stored_size,
        "digits": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits, 1,797 8x8 scans)",
        "backgrounds": [f"skimage.data.{n}" for n in _SKIMAGE_COLOR + _SKIMAGE_GRAY]
        + ["sklearn china.jpg", "sklearn flower.jpg"],
        "test_fraction_of_digit_samples": TEST_FRACTION,
    }
