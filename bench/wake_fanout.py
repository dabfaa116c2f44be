"""Benchmark: wake a 1,000-node cluster with magic packets, against the seed's sequential algorithm.

Everything goes to a UDP receiver on 127.0.0.1 running in a separate process (a receiver in this
process would compete for the GIL and distort the sender's figures). Figures printed:

* mko's cluster wake: ``power_on`` with ``WakeSchedule(retries=3, delay=1.0)`` and one shared
  ``WolDriver``; wall-clock from start to return, packets sent, received, distinct MACs received.
* raw send rate: ``MagicPacketSender.send`` over 100,000 prebuilt targets.
* the seed's documented algorithm (per node, per retry, one fresh socket per packet and
  ``sleep(delay)`` between a node's packets), timed on a small sample with the real delay and
  extrapolated linearly to the whole cluster; then the ratio seed / mko.

A benchmark reports; it does not fail on a missed target. Run with ``python bench/wake_fanout.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import select
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from mko.platform.db.models.inventory import NodeRole
from mko.power.base import NodeSnapshot, PowerDriver, WakeSchedule, power_on
from mko.power.drivers.wol import WolDriver, WolParams
from mko.power.magic import MagicPacketSender, WakeTarget

LOOPBACK = "127.0.0.1"  # the only address this benchmark ever sends to
NODES = 1_000
RETRIES = 3
DELAY = 1.0
CONTROL_PLANE = 3
RAW_PACKETS = 100_000
SEED_SAMPLE_NODES = 2
TARGET_TOTAL_S = 2.1
TARGET_RATE = 50_000
RCVBUF_BYTES = 32 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
MAGIC_LEN = 102
SYNC = b"\xff" * 6
# The receiver waits this long without a packet before it reports a phase as complete.
SETTLE_S = 0.05
# A receiver left alone this long (the parent died) exits by itself.
ORPHAN_S = 120.0


# --------------------------------------------------------------------------------------------------
# The receiver process


def _udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the socket bound to 127.0.0.1:``port`` (last /proc column)."""
    local = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError), open("/proc/net/udp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if len(fields) > 12 and fields[1] == local:
                return int(fields[-1])
    return 0


def _open_receiver() -> tuple[socket.socket, str, int]:
    """A UDP socket on 127.0.0.1:<ephemeral> with a big receive buffer; (socket, how, effective size)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        how = "SO_RCVBUFFORCE"
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        except OSError:  # not root / no CAP_NET_ADMIN: capped at net.core.rmem_max
            how = "SO_RCVBUF"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, how, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class _Counter:
    """Counts well-formed magic packets and their distinct target MACs arriving on one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.buf = bytearray(2048)
        self.packets = 0
        self.other = 0
        self.macs: set[bytes] = set()
        self.drops_base = _udp_drops(self.port)

    def drain(self) -> int:
        """Read every queued datagram; return how many there were."""
        view = memoryview(self.buf)
        seen = 0
        while True:
            try:
                size = self.sock.recv_into(self.buf)
            except BlockingIOError:
                return seen
            seen += 1
            if size == MAGIC_LEN and view[:6] == SYNC:
                mac = bytes(view[6:12])
                if view[6:MAGIC_LEN] == mac * 16:
                    self.packets += 1
                    self.macs.add(mac)
                    continue
            self.other += 1

    def settle_and_report(self) -> dict[str, int]:
        """Take what is still queued (until SETTLE_S passes without a datagram), return counts, reset."""
        settle_until = time.monotonic() + SETTLE_S
        while time.monotonic() < settle_until:
            if self.drain():
                settle_until = time.monotonic() + SETTLE_S
            else:
                time.sleep(0.005)
        drops = _udp_drops(self.port)
        counts = {
            "packets": self.packets,
            "macs": len(self.macs),
            "other": self.other,
            "drops": drops - self.drops_base,
        }
        self.packets, self.other, self.drops_base = 0, 0, drops
        self.macs.clear()
        return counts


def _receiver_main(conn: Connection) -> None:
    """The receiver process: count until "report" (answer with counts and reset) or "stop"."""
    sock, how, size = _open_receiver()
    try:
        counter = _Counter(sock)
        conn.send({"port": counter.port, "rcvbuf": size, "rcvbuf_option": how})
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(conn.fileno(), select.POLLIN)
        idle_since = time.monotonic()
        while True:
            events = poller.poll(1000)
            if not events:
                if time.monotonic() - idle_since > ORPHAN_S:
                    return
                continue
            idle_since = time.monotonic()
            for fd, _mask in events:
                if fd == sock.fileno():
                    counter.drain()
                elif conn.recv() == "stop":
                    return
                else:  # "report": the sender is done with a phase
                    conn.send(counter.settle_and_report())
    finally:
        sock.close()
        conn.close()


@dataclass
class Receiver:
    """The parent's handle on the receiver process."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    port: int
    rcvbuf: int
    rcvbuf_option: str

    @classmethod
    def start(cls) -> Receiver:
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        process = context.Process(target=_receiver_main, args=(child,), name="wake-receiver", daemon=True)
        process.start()
        child.close()
        if not parent.poll(10):
            process.kill()
            process.join()
            raise RuntimeError("the receiver process did not start")
        hello: dict[str, Any] = parent.recv()
        return cls(process, parent, hello["port"], hello["rcvbuf"], hello["rcvbuf_option"])

    def report(self) -> dict[str, int]:
        """What arrived since the last report (packets, distinct MACs, non-magic datagrams, drops)."""
        self.conn.send("report")
        if not self.conn.poll(30):
            raise RuntimeError("the receiver process did not report")
        counts: dict[str, int] = self.conn.recv()
        return counts

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send("stop")
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


# --------------------------------------------------------------------------------------------------
# The three measurements


def _mac(index: int) -> str:
    """A unique locally administered unicast MAC per node: 02:00:00:00:XX:YY."""
    return f"02:00:00:00:{index >> 8:02x}:{index & 0xFF:02x}"


def build_cluster(port: int) -> list[NodeSnapshot]:
    return [
        NodeSnapshot(
            node_id=i,
            hostname=f"n{i:04d}",
            ip_address=LOOPBACK,
            role=NodeRole.CONTROL_PLANE if i <= CONTROL_PLANE else NodeRole.WORKER,
            method="ethernet",
            probe_port=22,
            params=WolParams(wol_mac_address=_mac(i), wol_port=port, wol_broadcast_address=LOOPBACK),
        )
        for i in range(1, NODES + 1)
    ]


def bench_mko(nodes: list[NodeSnapshot]) -> tuple[float, int, int]:
    """Wake the cluster through mko's shared schedule; (seconds, packets sent, failed nodes)."""
    driver = WolDriver()

    def driver_for(_node: NodeSnapshot) -> PowerDriver:
        return driver

    schedule = WakeSchedule(retries=RETRIES, delay=DELAY, wait=False)
    started = time.perf_counter()
    outcomes = asyncio.run(power_on(nodes, schedule, driver_for))
    elapsed = time.perf_counter() - started
    driver.close()  # power_on closes it already; closing twice is harmless
    failed = sum(1 for outcome in outcomes if outcome.error is not None)
    return elapsed, sum(outcome.attempts for outcome in outcomes), failed


def bench_raw(port: int) -> tuple[float, int]:
    """Time one MagicPacketSender.send over RAW_PACKETS prebuilt targets; (seconds, packets sent)."""
    distinct = [WakeTarget(_mac(i), address=LOOPBACK, port=port) for i in range(1, NODES + 1)]
    targets = [distinct[i % NODES] for i in range(RAW_PACKETS)]
    with MagicPacketSender() as sender:
        sender.open("udp")  # socket set-up is not part of the send rate
        started = time.perf_counter()
        results = sender.send(targets)
        elapsed = time.perf_counter() - started
    return elapsed, sum(1 for result in results if result.ok)


def seed_send(mac: str, address: str, port: int) -> None:
    """One magic packet the way the seed's wakeonlan-style helper sends it: built from the MAC string,
    through a fresh broadcast socket that is closed again."""
    digits = mac.replace(":", "").replace("-", "")
    packet = bytes.fromhex("FF" * 6 + digits * 16)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(packet, (address, port))
    finally:
        sock.close()


def seed_wake(nodes: list[NodeSnapshot], retries: int, delay: float) -> int:
    """The seed's documented algorithm: node after node, each node's packets ``delay`` apart."""
    sent = 0
    for node in nodes:
        params = node.params
        assert isinstance(params, WolParams)
        if params.wol_mac_address is None or params.wol_broadcast_address != LOOPBACK:
            raise ValueError(f"{node.hostname}: this benchmark only sends to {LOOPBACK}")
        for attempt in range(retries):
            seed_send(params.wol_mac_address, params.wol_broadcast_address, params.wol_port)
            sent += 1
            if attempt < retries - 1:
                time.sleep(delay)
    return sent


def bench_seed(nodes: list[NodeSnapshot]) -> tuple[float, int]:
    """Time the seed's algorithm on the first SEED_SAMPLE_NODES nodes; (seconds, packets sent)."""
    started = time.perf_counter()
    sent = seed_wake(nodes[:SEED_SAMPLE_NODES], RETRIES, DELAY)
    return time.perf_counter() - started, sent


# --------------------------------------------------------------------------------------------------
# Report


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _received(counts: dict[str, int]) -> str:
    line = f"{counts['packets']:,} received ({counts['macs']:,} MACs)"
    if counts["drops"]:
        line += f", {counts['drops']:,} dropped by the receiver's buffer"
    if counts["other"]:
        line += f", {counts['other']:,} non-magic datagrams"
    return line


def main() -> None:
    receiver = Receiver.start()
    try:
        nodes = build_cluster(receiver.port)
        print(f"wake_fanout: {NODES:,} nodes x {RETRIES} packets, delay {DELAY} s")
        print(
            f"  receiver              separate process on {LOOPBACK}:{receiver.port},"
            f" {receiver.rcvbuf_option} {RCVBUF_BYTES / 2**20:.0f} MiB"
            f" (kernel reports {receiver.rcvbuf / 2**20:.0f} MiB incl. overhead)"
        )

        mko_s, mko_sent, mko_failed = bench_mko(nodes)
        mko_rx = receiver.report()
        failed = f", {mko_failed:,} nodes failed" if mko_failed else ""
        print(
            f"  mko cluster wake      total {mko_s:.3f} s   {mko_sent:,} sent{failed}   {_received(mko_rx)}"
            f"   target <= {TARGET_TOTAL_S} s: {_verdict(mko_s <= TARGET_TOTAL_S)}"
        )

        raw_s, raw_sent = bench_raw(receiver.port)
        raw_rx = receiver.report()
        rate = raw_sent / raw_s
        print(
            f"  raw send              {raw_sent:,} packets in {raw_s:.3f} s = {rate:,.0f} packets/s"
            f"   {_received(raw_rx)}   target >= {TARGET_RATE:,}/s: {_verdict(rate >= TARGET_RATE)}"
        )

        seed_s, seed_sent = bench_seed(nodes)
        seed_rx = receiver.report()
        seed_total = seed_s / SEED_SAMPLE_NODES * NODES
        print(
            f"  seed algorithm        sample {SEED_SAMPLE_NODES} nodes {seed_s:.2f} s ({seed_sent} sent,"
            f" {seed_rx['packets']} received) -> {NODES:,} nodes ~{seed_total:,.0f} s (extrapolated)"
        )
        print(
            f"                        per node: {RETRIES} packets, fresh socket each, sleep({DELAY}) after"
            " every packet but the node's last"
        )
        ratio = seed_total / mko_s
        print(f"  ratio                 seed / mko = {ratio:,.0f}x")
    finally:
        receiver.stop()

    result = {
        "nodes": NODES,
        "retries": RETRIES,
        "delay_s": DELAY,
        "mko_total_s": round(mko_s, 4),
        "mko_sent": mko_sent,
        "mko_failed_nodes": mko_failed,
        "mko_received": mko_rx["packets"],
        "mko_received_macs": mko_rx["macs"],
        "mko_receiver_drops": mko_rx["drops"],
        "mko_target_total_s": TARGET_TOTAL_S,
        "mko_target_met": mko_s <= TARGET_TOTAL_S,
        "raw_packets": raw_sent,
        "raw_s": round(raw_s, 4),
        "raw_packets_per_s": round(rate),
        "raw_received": raw_rx["packets"],
        "raw_receiver_drops": raw_rx["drops"],
        "raw_target_packets_per_s": TARGET_RATE,
        "raw_target_met": rate >= TARGET_RATE,
        "seed_sample_nodes": SEED_SAMPLE_NODES,
        "seed_sample_s": round(seed_s, 4),
        "seed_sample_received": seed_rx["packets"],
        "seed_extrapolated_s": round(seed_total, 1),
        "seed_over_mko": round(ratio, 1),
        "receiver_rcvbuf_bytes": receiver.rcvbuf,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
