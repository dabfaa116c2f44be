"""`mko serve` as it hands the app to uvicorn (uvicorn itself replaced: nothing listens)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from mko.cli.common import YOUNG_COLLECTION_THRESHOLD
from mko.cli.root import app
from mko.platform.settings import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Whatever `mko serve` froze in this test process is handed back to the collector afterwards, with
    the collector's thresholds as they were."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_serve_tunes_the_garbage_collector_before_it_serves(
    cli: CliRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    seen: dict[str, Any] = {}

    def run(served: Any, **options: Any) -> None:
        seen.update(app=served, frozen=gc.get_freeze_count(), threshold=gc.get_threshold(), options=options)

    monkeypatch.setattr(uvicorn, "run", run)
    # The mko logger's handlers stay as they are for the tests after this one.
    monkeypatch.setattr("mko.cli.serve.configure_logging", lambda *_args, **_kwargs: None)
    result = cli.invoke(app, ["serve", "--host", "127.0.0.1", "--port", "1"])
    assert result.exit_code == 0, result.output
    assert isinstance(seen["app"], FastAPI) and seen["options"]["proxy_headers"] is False
    # The modules, the app and its routes (tens of thousands of objects) are out of full collections.
    assert seen["frozen"] > 20_000
    assert any(obj is seen["app"] for obj in gc.get_objects()) is False  # frozen: no generation has it
    assert seen["threshold"][0] == YOUNG_COLLECTION_THRESHOLD
