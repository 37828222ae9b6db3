"""Suite-wide test settings."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # Each xdist worker gets one intra-op thread so 2 workers on 2 cores don't oversubscribe.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
    # Never read or write the user's real model cache from tests.
    os.environ.setdefault("ROBUSTLAB_CACHE", tempfile.mkdtemp(prefix="robustlab-test-cache-"))
