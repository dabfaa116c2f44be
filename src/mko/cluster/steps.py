"""What a shutdown and a recovery share: progress hooks, the step log of an operation,
and finishing a step even when the run is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from mko.cluster.microk8s import _COMMAND_NOT_FOUND, _WORKER_NOTICE
from mko.operations.records import record_step
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.ssh.client import CommandResult

__all__ = ["StepHook"]


StepHook = Callable[[str, str, OperationStatus], None]


def _progress(name: str, node_id: int | None, message: str) -> tuple[str, str]:
    """("lab-n2", "stop: Stopped.") for a node's step "stop lab-n2"; ("cluster", "host keys: …") for a
    step of the whole cluster, or one named without its host ("datastore", checked on a control plane)."""
    action, _, host = name.partition(" ")
    if node_id is None or not host:
        return "cluster", f"{name}: {message}"
    return host, f"{action}: {message}"


def _last_line(result: CommandResult) -> str:
    """The line that says how a command ended: the last of stdout, or of stderr when it failed."""
    first, second = (result.stdout, result.stderr) if result.ok else (result.stderr, result.stdout)
    text = first.strip() or second.strip() or f"exit {result.exit_status}"
    return text.splitlines()[-1]


class _StepLog:
    """Appends steps to one operation (one writer at a time) and reports each to the progress hook."""

    def __init__(
        self, session_factory: sessionmaker[Session], operation_id: int, on_step: StepHook | None
    ) -> None:
        self.session_factory = session_factory
        self.operation_id = operation_id
        self.on_step = on_step or (lambda _node, _text, _status: None)
        self.lock = asyncio.Lock()

    async def record(
        self,
        name: str,
        node_id: int | None,
        status: OperationStatus,
        message: str,
        detail: dict[str, Any],
        started: Any = None,
    ) -> None:
        async with self.lock:
            with self.session_factory() as session:
                operation = session.get_one(Operation, self.operation_id)
                record_step(
                    session,
                    operation,
                    name=name,
                    status=status,
                    node_id=node_id,
                    message=message,
                    detail=detail,
                    started_at=started,
                )
        self.on_step(*_progress(name, node_id, message), status)


def _wants_fallback(result: CommandResult) -> bool:
    """Whether the next command of a fallback list should run: worker notice, or no such command."""
    return result.exit_status == _COMMAND_NOT_FOUND or (result.ok and _WORKER_NOTICE in result.stdout)


async def _finish_even_if_cancelled(
    work: asyncio.Future[Operation], on_cancel: Callable[[], None]
) -> Operation:
    """Await WORK; when cancelled, ask it to stop at its next safe point, wait for that, then re-raise."""
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        on_cancel()
        while not work.done():
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                continue
        raise
