"""Suite-wide test settings."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch

_OWN_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # One intra-op thread in every test process: the tests' models are tiny (one thread is faster
    # for them) and 2 xdist workers on 2 cores must not oversubscribe. Tests that need more threads
    # set them and restore this.
    torch.set_num_threads(1)
    # Never read or write the user's real model cache from tests; the temporary cache is removed
    # when the session ends (each xdist worker and the controller has its own).
    if "ROBUSTLAB_CACHE" not in os.environ:
        path = tempfile.mkdtemp(prefix="robustlab-test-cache-")
        os.environ["ROBUSTLAB_CACHE"] = path
        _OWN_CACHE.append(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _OWN_CACHE:
        shutil.rmtree(path, ignore_errors=True)
    _OWN_CACHE.clear()
