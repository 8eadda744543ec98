"""The reference backend: ``imagecorruptions`` (maintained fork imagecorruptions-imaug), one image at a time.

Per-image seeding: ``glass_blur`` and ``impulse_noise`` take ``seed=``; every other corruption draws from NumPy's
global generator, which is re-seeded with the image's own seed before each call, so an image's corruption does
not depend on which process or chunk handles it.

``imagecorruptions`` hard-codes the ImageNet-C parameters.  For the CIFAR-10-C table (``params="cifar10"``) this
module carries a numpy port of hendrycks' ``make_cifar_c.py`` (:func:`corrupt_one_cifar10`): the same 19 functions
with the CIFAR-10-C per-severity parameters (shared with the fast backend: ``fast._P_CIFAR10``), seeded the same
way.  Two departures from the script, both forced: motion blur (and the snow layer's blur) uses
``imagecorruptions``' re-implementation of ImageMagick's motion blur instead of Wand/ImageMagick (as the ImageNet
reference does), and glass_blur's shuffle runs through ``imagecorruptions``' seeded numba kernel.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import ALL

SEEDED_BY_ARGUMENT = frozenset({"glass_blur", "impulse_noise"})
CIFAR10_PORT_VERSION = "1.0.0"  # bump when the numpy port of make_cifar_c.py changes its outputs
PARAMS = ("imagenet", "cifar10")


def reference_version(params: str = "imagenet") -> str:
    import importlib.metadata as md

    base = "imagecorruptions==unknown"
    for dist in ("imagecorruptions-imaug", "imagecorruptions"):
        try:
            base = f"{dist}=={md.version(dist)}"
            break
        except md.PackageNotFoundError:
            continue
    if params == "cifar10":
        return f"{base}+make_cifar_c-port=={CIFAR10_PORT_VERSION}"
    return base


def corrupt_one(image: np.ndarray, name: str, severity: int, seed: int, params: str = "imagenet") -> np.ndarray:
    if params == "cifar10":
        return corrupt_one_cifar10(image, name, severity, seed)
    if params != "imagenet":
        raise ValueError(f"unknown parameter table {params!r}; expected one of {', '.join(PARAMS)}")
    from imagecorruptions import corrupt

    np.random.seed(int(seed) & 0xFFFFFFFF)
    kwargs = {"seed": int(seed)} if name in SEEDED_BY_ARGUMENT else {}
    out = corrupt(image, severity=int(severity), corruption_name=name, **kwargs)
    return out[..., :3] if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2)


def corrupt_batch(images: np.ndarray, name: str, severity: int, seeds: np.ndarray,
                  params: str = "imagenet") -> np.ndarray:
    """Corrupt uint8 NHWC RGB images with the reference code; ``seeds[i]`` drives image i alone.

    params: "imagenet" (imagecorruptions, ImageNet-C parameters) or "cifar10" (the make_cifar_c.py port)."""
    if name not in ALL:
        raise KeyError(name)
    if params not in PARAMS:
        raise ValueError(f"unknown parameter table {params!r}; expected one of {', '.join(PARAMS)}")
    if name in _STACKED and images.ndim == 4 and images.shape[-1] == 3 and len(images) > 1:
        return _corrupt_stacked(images, name, severity, params)
    out = np.empty_like(images)
    for i, (img, seed) in enumerate(zip(images, seeds)):
        out[i] = corrupt_one(img, name, severity, int(seed), params)
    return out


# Deterministic corruptions that go through a whole batch at once, bit-identical to the per-image loop
# (tests/test_cifar_params.py), without its per-image overhead:
# - zoom_blur, CIFAR-10-C port: ``_zoom_blur_batch`` computes scipy.ndimage.zoom(order=1) itself, vectorised over the
#   batch, with scipy's arithmetic (float64 weights 1 - t and t, each term value * row weight * column weight, summed
#   in scipy's order, rounded to float32): zoom_blur zooms every image 6-26 times and was about a third of the
#   default run's corruption time;
# - zoom_blur, ImageNet-C (imagecorruptions' own function): one call on the batch as a single image of 3N channels
#   (zoom factor 1 on the channel axis, so each output channel reads its own input channel);
# - brightness and saturate, both tables: skimage's HSV round trip is per pixel, so the batch goes through as one
#   image with its rows stacked.
_STACKED = {"zoom_blur": "channels", "brightness": "rows", "saturate": "rows"}
_STACK_VALUES = 1 << 22  # values per channel-stacked call (a few 224 px images, 1,365 at 32 px), to bound the copies
# values per row-stacked (HSV) call: skimage's hsv2rgb stacks six float64 copies of its input, which at 2^22 values
# spent most of the time faulting in fresh pages. On the pipeline's 250-image tasks (brightness, severity 3):
# 0.39 s against 0.44 s per 1,000 images at 32 px (CIFAR-10-C table), 0.75 s against 2.3-4.4 s per 500 at 64 px
_ROWS_VALUES = 1 << 18
# values per _zoom_blur_batch call: its float64 temporaries then stay in the CPU caches (21 images at 32 px ran
# 2-3x faster than 1,365; benchmarks/bench_reference_batching.py)
_ZOOM_VALUES = 1 << 16


def _zoom_linear_center(x: np.ndarray, z: float) -> np.ndarray:
    """``_clipped_zoom_center`` on a (N, H, W, C) float32 batch, with scipy's order-1 arithmetic."""
    from .fast import _zoom_axis

    n, h, w, _ = x.shape
    (a0, a1, ta), (b0, b1, tb) = _zoom_axis(h, z), _zoom_axis(w, z)
    th, tw = (len(a0) - h) // 2, (len(b0) - w) // 2  # make_cifar_c's trim around the centre
    a0, a1, ta = a0[th:th + h], a1[th:th + h], ta[th:th + h]
    b0, b1, tb = b0[tw:tw + w], b1[tw:tw + w], tb[tw:tw + w]
    xd = x.astype(np.float64)
    r0, r1 = xd[:, a0], xd[:, a1]  # rows; each term below is value * row weight * column weight, as scipy
    # a coordinate past the last input pixel (by a rounding error: 35 * 29/35 > 29) is outside the input for scipy's
    # mode "constant": that output row or column is cval (0); at exactly the last pixel the next one has weight 0
    out_a, out_b = (a1 == a0) & (ta > 0), (b1 == b0) & (tb > 0)
    u0, u1 = np.where(out_a, 0.0, 1.0 - ta)[:, None, None], np.where(a1 == a0, 0.0, ta)[:, None, None]
    v0, v1 = np.where(out_b, 0.0, 1.0 - tb)[:, None], np.where(b1 == b0, 0.0, tb)[:, None]
    p0, p1 = r0 * u0, r1 * u1
    out = np.take(p0, b0, axis=2) * v0
    out += np.take(p0, b1, axis=2) * v1
    out += np.take(p1, b0, axis=2) * v0
    out += np.take(p1, b1, axis=2) * v1
    return out.astype(np.float32)


def _zoom_blur_batch(images: np.ndarray, c) -> np.ndarray:
    """``_c_zoom_blur`` on a uint8 NHWC batch (same float32 accumulation, image by image)."""
    x = (images / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for z in c:
        out += _zoom_linear_center(x, float(z))
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def _corrupt_stacked(images: np.ndarray, name: str, severity: int, params: str) -> np.ndarray:
    n, h, w, c = images.shape
    numpy_zoom = params == "cifar10" and name == "zoom_blur"
    budget = _ZOOM_VALUES if numpy_zoom else _ROWS_VALUES if _STACKED[name] == "rows" else _STACK_VALUES
    step = max(1, budget // (h * w * c))
    if params == "cifar10":
        fn, arg = _CIFAR10_FUNCS[name], _cifar_table()[name][int(severity) - 1]

        def one_call(x: np.ndarray) -> np.ndarray:
            return np.uint8(np.nan_to_num(np.asarray(fn(x, arg, 0), dtype=np.float64), nan=0.0))
    else:
        from imagecorruptions import corruption_dict

        def one_call(x: np.ndarray) -> np.ndarray:  # what imagecorruptions.corrupt does around the function
            return np.uint8(corruption_dict[name](x, int(severity)))
    out = np.empty_like(images)
    for a in range(0, n, step):
        part = images[a:a + step]
        k = len(part)
        if numpy_zoom:  # fn's arithmetic on the whole part, then what corrupt_one_cifar10 does with its output
            out[a:a + k] = np.uint8(np.nan_to_num(np.asarray(_zoom_blur_batch(part, arg), dtype=np.float64), nan=0.0))
        elif _STACKED[name] == "rows":
            out[a:a + k] = one_call(part.reshape(k * h, w, c)).reshape(k, h, w, c)
        else:
            stacked = np.ascontiguousarray(part.transpose(1, 2, 0, 3).reshape(h, w, k * c))
            out[a:a + k] = one_call(stacked).reshape(h, w, k, c).transpose(2, 0, 1, 3)
    return out


# ==============================================================================================================
# CIFAR-10-C: numpy port of make_cifar_c.py (hendrycks/robustness), parameters in fast._P_CIFAR10
# ==============================================================================================================
def cifar10_frost_scale(h: int, w: int) -> float:
    """make_cifar_c scales the frost textures by 0.2 for 32 px images; larger images scale it with their long
    side so that a random crop always fits (every texture is >= 63 px at 0.2)."""
    return 0.2 * max(1.0, max(h, w) / 32.0)


@lru_cache(maxsize=1)
def _cifar_table() -> dict:
    from .fast import _P_CIFAR10  # one table for both backends

    return _P_CIFAR10


@lru_cache(maxsize=1)
def _frost_files() -> tuple[np.ndarray, ...]:
    import importlib.resources

    import cv2

    root = importlib.resources.files("imagecorruptions") / "frost"
    out = []
    for f in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"):
        with importlib.resources.as_file(root / f) as p:
            img = cv2.imread(str(p))
        if img is None:
            raise FileNotFoundError(f"frost texture {f} missing from the imagecorruptions package")
        out.append(img)
    return tuple(out)


def _gauss(x: np.ndarray, sigma: float, **kw) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None, **kw)


def _clipped_zoom_center(img: np.ndarray, z: float) -> np.ndarray:
    """make_cifar_c's clipped_zoom: central crop, linear zoom, trimmed around the centre (per axis)."""
    from scipy.ndimage import zoom as scizoom

    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / z)), int(np.ceil(w / z))
    top, left = (h - ch) // 2, (w - cw) // 2
    img = scizoom(img[top:top + ch, left:left + cw], (z, z, 1), order=1)
    th, tw = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[th:th + h, tw:tw + w]


def _plasma64(mapsize: int, decay: float) -> np.ndarray:
    """Diamond-square heightmap in float64 (make_cifar_c's plasma_fractal), draws from np.random in call order."""
    a = np.empty((mapsize, mapsize), dtype=np.float64)
    a[0, 0] = 0
    step, wib = mapsize, 100.0
    while step >= 2:
        half = step // 2
        corner = a[0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, -1, axis=0)
        sq += np.roll(sq, -1, axis=1)
        a[half:mapsize:step, half:mapsize:step] = sq / 4 + wib * np.random.uniform(-wib, wib, sq.shape)
        dr = a[half:mapsize:step, half:mapsize:step]
        ul = a[0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        a[0:mapsize:step, half:mapsize:step] = lt / 4 + wib * np.random.uniform(-wib, wib, lt.shape)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        a[half:mapsize:step, 0:mapsize:step] = tt / 4 + wib * np.random.uniform(-wib, wib, tt.shape)
        step //= 2
        wib /= decay
    a -= a.min()
    return a / a.max()


def _hsv_op(x: np.ndarray, fn) -> np.ndarray:
    import skimage.color

    hsv = skimage.color.rgb2hsv(x / 255.0)
    fn(hsv)
    return np.clip(skimage.color.hsv2rgb(hsv), 0, 1) * 255


def _c_gaussian_noise(x, c, seed):
    x = x / 255.0
    return np.clip(x + np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def _c_shot_noise(x, c, seed):
    x = x / 255.0
    return np.clip(np.random.poisson(x * c) / c, 0, 1) * 255


def _c_impulse_noise(x, c, seed):
    from skimage.util import random_noise

    return np.clip(random_noise(x / 255.0, "s&p", int(seed), amount=c), 0, 1) * 255


def _c_speckle_noise(x, c, seed):
    x = x / 255.0
    return np.clip(x + x * np.random.normal(size=x.shape, scale=c), 0, 1) * 255


def _c_gaussian_blur(x, c, seed):
    return np.clip(_gauss(x / 255.0, c), 0, 1) * 255


def _c_glass_blur(x, c, seed):
    from imagecorruptions.corruptions import _shuffle_pixels_njit_glass_blur

    y = np.uint8(_gauss(x / 255.0, c[0]) * 255)
    # make_cifar_c loops over range(32 - delta, delta, -1): the image size at 32 px
    y = _shuffle_pixels_njit_glass_blur(y.shape[0], y.shape[1], y, c, int(seed))
    return np.clip(_gauss(y / 255.0, c[0]), 0, 1) * 255


def _c_defocus_blur(x, c, seed):
    import cv2
    from imagecorruptions.corruptions import disk

    x = x / 255.0
    kernel = disk(radius=c[0], alias_blur=c[1])
    y = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], axis=2)
    return np.clip(y, 0, 1) * 255


def _c_motion_blur(x, c, seed):
    from imagecorruptions.corruptions import _motion_blur

    y = _motion_blur(np.array(x), radius=c[0], sigma=c[1], angle=np.random.uniform(-45, 45))
    return np.clip(y, 0, 255)


def _c_zoom_blur(x, c, seed):
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for z in c:
        out += _clipped_zoom_center(x, z)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def _c_snow(x, c, seed):
    import cv2
    from imagecorruptions.corruptions import _motion_blur

    x = np.array(x, dtype=np.float32) / 255.0
    h, w = x.shape[:2]
    layer = np.random.normal(size=(h, w), loc=c[0], scale=c[1])
    layer = _clipped_zoom_center(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer.squeeze(-1), 0, 1) * 255).astype(np.uint8)  # the PIL 'L' image of the source
    layer = _motion_blur(layer, radius=c[4], sigma=c[5], angle=np.random.uniform(-135, -45))
    layer = (np.clip(np.round(layer), 0, 255).astype(np.uint8) / 255.0)[..., np.newaxis]  # 8-bit, as decoded
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def _c_frost(x, c, seed):
    import cv2

    h, w = x.shape[:2]
    idx = np.random.randint(5)  # as the source: frost6 is never drawn
    s = cifar10_frost_scale(h, w)
    tex = cv2.resize(_frost_files()[idx], (0, 0), fx=s, fy=s)
    x0, y0 = np.random.randint(0, tex.shape[0] - h), np.random.randint(0, tex.shape[1] - w)
    tex = tex[x0:x0 + h, y0:y0 + w][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(x) + c[1] * tex, 0, 255)


def _c_fog(x, c, seed):
    h, w = x.shape[:2]
    mapsize = 1 << (max(h, w, 3) - 1).bit_length()  # 32 at 32 px, the source's fixed mapsize
    x = x / 255.0
    maxv = x.max()
    x = x + c[0] * _plasma64(mapsize, c[1])[:h, :w][..., np.newaxis]
    return np.clip(x * maxv / (maxv + c[0]), 0, 1) * 255


def _c_brightness(x, c, seed):
    def f(hsv):
        hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)

    return _hsv_op(x, f)


def _c_saturate(x, c, seed):
    def f(hsv):
        hsv[:, :, 1] = np.clip(hsv[:, :, 1] * c[0] + c[1], 0, 1)

    return _hsv_op(x, f)


def _c_contrast(x, c, seed):
    x = x / 255.0
    m = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - m) * c + m, 0, 1) * 255


def _c_elastic_transform(x, c, seed):
    import cv2
    from scipy.ndimage import map_coordinates

    image = np.array(x, dtype=np.float32) / 255.0
    shape = image.shape
    h, w = shape[:2]
    size = min(h, w)  # the source's IMSIZE
    alpha, sigma, jitter = size * c[0], size * c[1], size * c[2]
    center = np.float32([h, w]) // 2
    sq = min(h, w) // 3
    pts1 = np.float32([center + sq, [center[0] + sq, center[1] - sq], center - sq])
    pts2 = pts1 + np.random.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), (w, h), borderMode=cv2.BORDER_REFLECT_101)
    dx = (_gauss(np.random.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (_gauss(np.random.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    gx, gy, gz = np.meshgrid(np.arange(w), np.arange(h), np.arange(shape[2]))
    idx = (np.reshape(gy + dy[..., None], (-1, 1)), np.reshape(gx + dx[..., None], (-1, 1)), np.reshape(gz, (-1, 1)))
    return np.clip(map_coordinates(image, idx, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def _c_pixelate(x, c, seed):
    from PIL import Image

    h, w = x.shape[:2]
    img = Image.fromarray(x).resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(img.resize((w, h), Image.BOX))


def _c_jpeg_compression(x, c, seed):
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=c)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _c_spatter(x, c, seed):
    import cv2

    x = np.array(x, dtype=np.float32) / 255.0
    liquid = _gauss(np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        lq = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(lq, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = lq * dist
        mx = m.max()
        m = m / (mx if mx > 0 else 1.0) * c[4]  # the source divides by zero (NaN) on a dry layer; guarded
        color = np.array([175 / 255.0, 238 / 255.0, 238 / 255.0], dtype=np.float32)
        return np.clip(x + m[..., None] * color, 0, 1) * 255
    m = np.where(liquid > c[3], 1, 0)
    m = _gauss(m.astype(np.float32), c[4])
    m[m < 0.8] = 0
    color = np.array([63 / 255.0, 42 / 255.0, 20 / 255.0], dtype=np.float32) * m[..., None]
    return np.clip(x * (1 - m[..., None]) + color, 0, 1) * 255


_CIFAR10_FUNCS = {n: globals()[f"_c_{n}"] for n in ALL}


def corrupt_one_cifar10(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """make_cifar_c.py's corruption ``name`` at ``severity`` on one uint8 HWC RGB image (CIFAR-10-C parameters).

    Seeded like :func:`corrupt_one`: ``np.random.seed(seed)`` before the call; impulse_noise and glass_blur take
    the seed directly (skimage's ``rng`` / the numba shuffle)."""
    if name not in _CIFAR10_FUNCS:
        raise KeyError(name)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = np.ascontiguousarray(image[..., :3])
    c = _cifar_table()[name][int(severity) - 1]
    np.random.seed(int(seed) & 0xFFFFFFFF)
    out = _CIFAR10_FUNCS[name](image, c, int(seed))
    return np.uint8(np.nan_to_num(np.asarray(out, dtype=np.float64), nan=0.0))
