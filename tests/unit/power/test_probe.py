"""TCP probes against real sockets on loopback only (127.0.0.0/8 offers many addresses)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mko.power.probe import ProbeResult, probe_many, probe_tcp, wait_until_up

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def bound_port() -> Iterator[socket.socket]:
    """A socket bound to 127.0.0.1, not listening: connections are refused and nobody takes the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(2.0)
    yield sock
    sock.close()


async def test_refused(bound_port: socket.socket) -> None:
    result = await probe_tcp("127.0.0.1", bound_port.getsockname()[1], 1.0)
    assert result.ok is False
    assert result.error == "connection refused"
    assert 0 <= result.latency < 1.0


async def test_up_and_closed_cleanly(listener: socket.socket) -> None:
    result = await probe_tcp("127.0.0.1", listener.getsockname()[1], 1.0)
    assert result == ProbeResult(ok=True, latency=result.latency, error=None)
    assert result.latency >= 0
    # The probe hung up: the server sees the connection and then end-of-file, not a dangling socket.
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(2.0)
        assert conn.recv(16) == b""


async def test_timeout_when_the_accept_queue_is_full() -> None:
    # A listener with backlog 0 holds one finished handshake; Linux then drops further SYNs silently
    # (unless tcp_abort_on_overflow is set), so a probe waits just as for a host that is powered off.
    abort = Path("/proc/sys/net/ipv4/tcp_abort_on_overflow")
    if abort.exists() and abort.read_text().strip() != "0":
        pytest.skip("tcp_abort_on_overflow answers a full queue with a reset")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            result = await probe_tcp("127.0.0.1", port, 0.3)
    assert result.ok is False
    assert result.error == "timed out"
    assert result.latency >= 0.3


async def test_probe_many_200_loopback_addresses_with_3_listening() -> None:
    up_hosts = ["127.0.2.10", "127.0.2.100", "127.0.2.200"]
    servers: list[socket.socket] = []
    try:
        for host in up_hosts:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            servers.append(server)
            # The first listener picks a free port; the others share it on their own addresses.
            server.bind((host, servers[0].getsockname()[1] if len(servers) > 1 else 0))
            server.listen(8)
        port = servers[0].getsockname()[1]
        targets = [(f"127.0.2.{i}", port) for i in range(1, 201)]
        results = await probe_many(targets + targets[:5], timeout=2.0, concurrency=64)
    finally:
        for server in servers:
            server.close()
    assert list(results) == targets  # duplicates probed once, order kept
    assert {host for (host, _), result in results.items() if result.ok} == set(up_hosts)
    refused = [r for r in results.values() if not r.ok]
    assert len(refused) == 197
    assert {r.error for r in refused} == {"connection refused"}


async def test_probe_many_1000_addresses_all_refused(bound_port: socket.socket) -> None:
    port = bound_port.getsockname()[1]
    targets = [(f"127.0.{3 + i // 250}.{1 + i % 250}", port) for i in range(1000)]
    # Refusals come back at once; the generous timeout only keeps a starved event loop (four test
    # workers on two cores) from turning a slow refusal into a timeout.
    results = await probe_many(targets, timeout=15.0)
    assert len(results) == 1000
    assert {r.error for r in results.values()} == {"connection refused"}


async def test_probe_many_edge_cases() -> None:
    assert await probe_many([], timeout=1.0) == {}
    with pytest.raises(ValueError, match="concurrency"):
        await probe_many([("127.0.0.1", 1)], timeout=1.0, concurrency=0)


async def test_wait_until_up_sees_a_server_that_starts_late(bound_port: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    listening_at: list[float] = []

    async def start_listening_later() -> None:
        await asyncio.sleep(0.3)
        bound_port.listen(8)
        listening_at.append(loop.time())

    server_task = asyncio.create_task(start_listening_later())
    answered = await wait_until_up(
        "127.0.0.1", bound_port.getsockname()[1], deadline=started + 5.0, interval=0.05, connect_timeout=0.5
    )
    await server_task
    assert answered is not None
    assert listening_at[0] <= answered < started + 5.0


async def test_wait_until_up_returns_none_at_the_deadline(bound_port: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.3
    assert (
        await wait_until_up("127.0.0.1", bound_port.getsockname()[1], deadline=deadline, interval=0.05)
        is None
    )
    assert loop.time() >= deadline


async def test_wait_until_up_with_a_past_deadline_does_not_probe(listener: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    assert await wait_until_up("127.0.0.1", listener.getsockname()[1], deadline=loop.time() - 1) is None


async def test_wait_until_up_is_cancellable(bound_port: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(
        wait_until_up("127.0.0.1", bound_port.getsockname()[1], deadline=loop.time() + 60, interval=0.05)
    )
    await asyncio.sleep(0.2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
