"""The GGUF loader's read-ahead (model.gguf.prefetch): a background thread maps the file's pages in
file order while diffusers builds the model. Full-size throughput: python -m bench.load."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from bench.activations import rss
from wan_demo.model import gguf

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise read-ahead is Linux's")
MB = 2**20


def test_prefetch_maps_the_file_in_the_background(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 255, 200 * MB, dtype=np.uint8).tobytes())
    mapping = np.memmap(path, mode="c")
    before = rss()
    thread = gguf.prefetch(mapping, 4 * MB)
    assert thread is not None and thread.daemon
    thread.join(60)
    assert not thread.is_alive()
    assert rss() - before >= 190 * MB  # the pages from byte 4 MiB on are mapped into this process
    assert mapping[-1] == path.read_bytes()[-1]  # and read as the file holds them


def test_small_files_and_the_memory_cap_skip_it(tmp_path):
    path = tmp_path / "small.bin"
    path.write_bytes(b"\0" * MB)
    assert gguf.prefetch(np.memmap(path, mode="c"), 0) is None  # under one chunk: not worth a thread
    assert gguf._available_bytes() > 0  # /proc/meminfo's MemAvailable: the cap reads it
