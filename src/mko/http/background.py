"""Power actions that outlive a request: started here, tracked on the app, cancelled at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import FastAPI, Response, status

from mko.platform.db.models.operations import Operation
from mko.platform.settings import Settings
from mko.wol.wake import PreparedWake, run_wake

__all__ = ["launch", "launch_wake", "result_or_accepted"]

T = TypeVar("T")


def launch(app: FastAPI, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``work`` in the background, holding a reference until it ends (the app's lifespan cancels it)."""
    task = asyncio.create_task(work)
    tasks: set[asyncio.Task[Any]] = app.state.background_tasks
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def launch_wake(app: FastAPI, settings: Settings, prepared: PreparedWake) -> asyncio.Task[Operation]:
    """Start a prepared wake in the background with its own database session."""
    return launch(app, run_wake(app.state.session_factory, settings, prepared))


async def result_or_accepted(
    task: asyncio.Task[Operation], wait: float, response: Response, url: str
) -> Operation | None:
    """The operation when ``task`` ends within ``wait`` seconds; else None with 202 and ``Location`` set
    (the work goes on in the background; the client follows ``url``)."""
    try:
        return await asyncio.wait_for(asyncio.shield(task), wait)
    except TimeoutError:
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Location"] = url
        return None
