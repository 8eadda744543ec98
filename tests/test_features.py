"""features.extract: batches side by side on CPU threads give the same features as one batch after another."""
import numpy as np
import pytest
import torch

from jerc_eval.features import extract
from jerc_eval.plugins import create_host


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(300, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["zoo-mae", "zoo-byol"])
def test_threaded_batches_match_serial(name, images, threads):
    enc = create_host(entry_points=False).registry("encoders").get(name)().load()
    torch.set_num_threads(1)
    serial = extract(enc, images, batch_size=64)  # 5 batches, the last one short
    torch.set_num_threads(2)
    threaded = extract(enc, images, batch_size=64)
    assert torch.get_num_threads() == 2  # restored after the pool
    assert serial.shape == (300, enc.module(torch.zeros(1, 3, 32, 32)).flatten(1).shape[1])
    np.testing.assert_array_equal(serial, threaded)


def test_thread_count_restored_when_the_encoder_fails(images, threads):
    enc = create_host(entry_points=False).registry("encoders").get("zoo-byol")().load()

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("broken encoder")

    enc.module = Broken()
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="broken encoder"):
        extract(enc, images, batch_size=64)
    assert torch.get_num_threads() == 2


def test_single_threaded_with_blas_restores_torch_threads():
    """threadpoolctl records torch's OpenMP pool too: restoring it after torch set torch back to 1 thread."""
    import torch

    from jerc_eval.features import single_threaded

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_threaded(blas=True):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
