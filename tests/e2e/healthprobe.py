"""Ask ``URL/api/health`` every 20 ms until stdin closes; one line per probe: start, seconds, status.

A process of its own, as a load balancer's probe would be: its timings are the server's, not those of
the test's busy client.
"""

from __future__ import annotations

import sys
import threading
import time

import httpx


def main(url: str) -> None:
    """Probe until stdin reaches its end."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            at, started = time.time(), time.perf_counter()
            try:
                status = str(client.get("/api/health").status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            print(f"{at:.6f} {time.perf_counter() - started:.6f} {status}", flush=True)
            stop.wait(0.02)


if __name__ == "__main__":
    main(sys.argv[1])
