import numpy as np
import pytest

from jerc_eval.corruptions import ALL
from jerc_eval.default_plugins.suites import ImageNetC
from jerc_eval.engine import corrupt_cells
from jerc_eval.seeding import derive_seed, image_seeds


@pytest.fixture(scope="module")
def images():
    import skimage.data

    im = skimage.data.astronaut()
    return np.stack([im[y:y + 48, x:x + 48] for y, x in [(0, 0), (100, 200), (250, 250), (300, 100)]])


def test_seeds_are_stable_and_distinct():
    a = image_seeds(0, "fog", 3, 5)
    assert list(a) == list(image_seeds(0, "fog", 3, 5))
    assert len(set(a)) == 5
    assert list(image_seeds(0, "fog", 3, 2, offset=3)) == list(a[3:])
    assert derive_seed(0, "fog", 3) != derive_seed(1, "fog", 3) != derive_seed(0, "fog", 4)


@pytest.mark.parametrize("name", ALL)
def test_reference_suite_every_corruption(images, name):
    suite = ImageNetC()
    seeds = image_seeds(0, name, 3, len(images))
    out = suite.corrupt(images, name, 3, seeds)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)
    again = suite.corrupt(images[::-1], name, 3, seeds[::-1])[::-1]  # order / batch composition do not matter
    assert np.array_equal(out, again)


def test_pool_equals_serial_for_any_chunking(images):
    cells = [("gaussian_noise", 2), ("glass_blur", 1), ("frost", 5)]
    serial = dict(corrupt_cells(ImageNetC(), images, cells, run_seed=3, workers=1, chunk=4))
    pooled = dict(corrupt_cells(ImageNetC(), images, cells, run_seed=3, workers=2, chunk=1))
    assert list(pooled) == cells
    for cell in cells:
        assert np.array_equal(serial[cell], pooled[cell])
    other = dict(corrupt_cells(ImageNetC(), images, cells[:1], run_seed=4, workers=1))
    assert not np.array_equal(other[cells[0]], serial[cells[0]])


def test_warm_up_compiles_the_glass_blur_once_for_the_workers_to_inherit():
    """The reference glass blur's numba pixel shuffle is compiled by the suite's warm-up in a background thread of
    the main process; the fast backend and suites without a warm-up start no thread."""
    from imagecorruptions.corruptions import _shuffle_pixels_njit_glass_blur as shuffle

    from jerc_eval import engine
    from jerc_eval.api import CorruptionSuite

    suite = ImageNetC()
    thread = engine.warm_up(suite, ["gaussian_noise", "glass_blur"])
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive() and shuffle.signatures

    fast = ImageNetC()
    fast.backend = "fast"
    assert engine.warm_up(fast, ["glass_blur"]) is not None  # a thread, which has nothing to do
    assert ImageNetC.warm_up is not CorruptionSuite.warm_up

    class Plain(CorruptionSuite):
        name = "plain"
        corruptions = {"none": "digital"}

        def corrupt(self, images, corruption, severity, seeds):
            return images

    assert engine.warm_up(Plain(), ["none"]) is None
