# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Fixtures shared by the test modules of `astro_unet.tests`."""

import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny networks run fastest (and steadily on a busy machine) on one thread."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
