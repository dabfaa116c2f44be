"""Is a node up? TCP connect probes, one at a time, in bulk, or polled until a deadline.

A probe only completes the TCP handshake and closes again: a port that accepts connections (SSH, the
kubelet, the MicroK8s API) is the cheapest honest sign that a woken machine has booted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ProbeResult", "probe_many", "probe_tcp", "wait_until_up"]

_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ENETDOWN: "network is down",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EADDRNOTAVAIL: "address not available",
}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of one probe; ``latency`` is the seconds until it connected or failed."""

    ok: bool
    latency: float
    error: str | None = None

    @property
    def refused(self) -> bool:
        """The host answered with a TCP reset: it is there, but nothing listens on that port."""
        return self.error == _CONNECT_ERRORS[errno.ECONNREFUSED]


def _describe(exc: OSError, host: str) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror}"
    known = _CONNECT_ERRORS.get(exc.errno or 0)
    if known is not None:
        return known
    # asyncio joins the errors of several resolved addresses into one OSError without an errno.
    return exc.strerror or str(exc) or type(exc).__name__


async def probe_tcp(host: str, port: int, timeout: float) -> ProbeResult:
    """Try one TCP connection to ``host:port`` within ``timeout`` seconds and close it again."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(ok=False, latency=loop.time() - started, error="timed out")
    except OSError as exc:
        return ProbeResult(ok=False, latency=loop.time() - started, error=_describe(exc, host))
    latency = loop.time() - started
    writer.close()
    # The peer may reset a connection it never meant to serve; it was up, which is all we asked.
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(ok=True, latency=latency)


async def probe_many(
    targets: Iterable[tuple[str, int]], timeout: float, concurrency: int = 512
) -> dict[tuple[str, int], ProbeResult]:
    """Probe every distinct (host, port) with at most ``concurrency`` connections in flight."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    # NOTE: each connection in flight holds a file descriptor; keep concurrency below `ulimit -n`.
    semaphore = asyncio.Semaphore(concurrency)
    results: dict[tuple[str, int], ProbeResult] = {}

    async def one(target: tuple[str, int]) -> None:
        async with semaphore:
            results[target] = await probe_tcp(target[0], target[1], timeout)

    unique = list(dict.fromkeys(targets))
    async with asyncio.TaskGroup() as group:
        for target in unique:
            group.create_task(one(target))
    # Results in the order the targets were given, not the order the probes finished.
    return {target: results[target] for target in unique}


async def wait_until_up(
    host: str,
    port: int,
    *,
    deadline: float,
    interval: float = 0.5,
    connect_timeout: float = 1.0,
) -> float | None:
    """Probe every ``interval`` s until ``host:port`` accepts; return that loop time, or None at deadline."""
    loop = asyncio.get_running_loop()
    while True:
        attempt_started = loop.time()
        remaining = deadline - attempt_started
        if remaining <= 0:
            return None
        result = await probe_tcp(host, port, min(connect_timeout, remaining))
        if result.ok:
            return attempt_started + result.latency
        # Attempts start on a fixed cadence, so a slow refusal does not stretch the interval.
        pause = min(attempt_started + interval, deadline) - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
