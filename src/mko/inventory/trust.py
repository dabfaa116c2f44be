"""Trusting a node's host key: an operation that writes it to known_hosts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from mko.inventory.nodes import get_node
from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import in_thread_session
from mko.platform.errors import ConflictError, InputError, MkoError
from mko.platform.settings import Settings
from mko.platform.validation import check_text, quoted

if TYPE_CHECKING:
    pass
from mko.ssh.client import SshTarget
from mko.ssh.host_keys import _FINGERPRINT, _sha256_part, scan_host_key
from mko.ssh.known_hosts import KnownHosts

__all__ = ["node_target", "trust_node"]

log = logging.getLogger("mko.ssh")


def node_target(session: Session, settings: Settings, node_id: int) -> SshTarget:
    """Where and how mko reaches node NODE_ID over SSH (NotFoundError for an unknown id)."""
    return SshTarget.of(get_node(session, node_id), settings)


async def trust_node(
    sessions: sessionmaker[Session],
    settings: Settings,
    node_id: int,
    *,
    actor: Actor,
    expected: str | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Record the host key node NODE_ID presents in known_hosts, as an operation.

    ``expected`` (``SHA256:…``, e.g. read on the node's console) must match the presented key; a key
    that differs from the recorded one is only replaced with ``replace``. Nothing is written otherwise.
    Database work runs in worker threads with short sessions of its own, never across the SSH wait.
    """

    def begin(session: Session) -> tuple[SshTarget, int]:
        target = node_target(session, settings, node_id)
        fingerprint_text = None if expected is None else _sha256_part(check_text(expected, "fingerprint"))
        if expected is not None and not _FINGERPRINT.fullmatch(fingerprint_text or ""):
            raise InputError(
                "fingerprint", f"{quoted(expected)} is not a SHA256 fingerprint (SHA256:…, 43 characters)"
            )
        operation = start_operation(
            session,
            kind="ssh_trust",
            target_type="node",
            target_id=node_id,
            actor=actor,
            parameters={"address": target.address, "expected": expected, "replace": replace},
            summary=f"trusting the host key of {target.label}",
        )
        return target, operation.id

    def close(session: Session, status: OperationStatus, message: str, result: dict[str, Any]) -> None:
        operation = session.get_one(Operation, operation_id)
        record_step(session, operation, name="record host key" if result else "scan host key", status=status,
                    node_id=node_id, message=message, detail=result)  # fmt: skip
        finish_operation(session, operation, status=status, summary=message, result=result or None)

    target, operation_id = await in_thread_session(sessions, begin)
    try:
        info = await scan_host_key(target, settings)
        if expected is not None and _sha256_part(expected) != _sha256_part(info.fingerprint):
            raise ConflictError(
                f"{target.label} presents {info.fingerprint}, not the expected {expected}; nothing recorded"
            )
        if info.status == "changed" and not replace:
            raise ConflictError(
                f"{target.label}: a different host key is recorded ({', '.join(info.recorded)}); the node "
                f"now presents {info.fingerprint}. If it was reinstalled, check the key and use --replace"
            )
    except MkoError as exc:
        failure = str(exc)
        await in_thread_session(sessions, lambda session: close(session, OperationStatus.FAILED, failure, {}))
        raise
    action = {"unknown": "recorded", "changed": "replaced", "trusted": "already trusted"}[info.status]
    if info.status != "trusted":
        KnownHosts(settings.ssh_known_hosts).trust(target.host, target.port, info.key, replace=replace)
    result = info.as_dict() | {"action": action, "known_hosts": str(settings.ssh_known_hosts)}
    log.warning("%s: host key %s %s by %s", target.label, info.fingerprint, action, actor.name)
    done = f"{info.fingerprint} {action}"
    await in_thread_session(sessions, lambda session: close(session, OperationStatus.SUCCEEDED, done, result))
    return result | {"operation_id": operation_id}
