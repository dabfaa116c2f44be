"""Fixtures of the cluster lab tests."""

from __future__ import annotations

import pytest

from mko.platform.settings import Settings, get_settings


@pytest.fixture
def fast(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings, polling every 0.1 s (the CLI reads the same values from the environment)."""
    monkeypatch.setenv("MKO_PROBE_INTERVAL", "0.1")
    get_settings.cache_clear()
    return get_settings()
