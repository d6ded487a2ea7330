"""Shared fixtures: one Ray for the whole session, started only if a test asks for it."""

from __future__ import annotations

import os
import sys

# Before Ray is imported anywhere: no auth token file in $HOME, no usage stats.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("SISA_CRASH_AT", None)

import pytest

from tests.helpers import make_classification


@pytest.fixture(scope="session")
def ray_session():
    """The embedded local Ray sisa would start itself, shared by every test."""
    from sisa.engine import connect

    return connect(num_cpus=2, object_store_mb=128)


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_end():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def clf_data():
    return make_classification()
