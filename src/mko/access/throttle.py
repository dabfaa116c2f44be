"""Login throttling: failed logins per account and per client slow down further tries."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LoginThrottle"]


@dataclass
class _Backoff:
    failures: int = 0
    last: float = 0.0


class LoginThrottle:
    """Slows password guessing without locking the real user out.

    - **Per account** (the name tried, known or not): after ``free_failures`` failures each further
      attempt waits 1, 2, 4 … seconds after the last failure, at most ``backoff_max``; only a good
      login to *that* account resets it, so another account's login never clears it.
    - **Per address**: at most ``attempts`` failures within ``window`` seconds (password spraying
      across accounts); they only expire, no login resets them.
    - **Known browsers**: a good login leaves a device cookie naming the account (HMAC-signed). A login
      carrying it for that account skips the two limits above and has its own (``attempts`` failures
      per ``window`` for that cookie): whoever hammers an account or shares the user's address cannot
      keep the real user out of a browser they signed in from before.

    State is in memory, per process, bounded in size; a restart forgets it.
    """

    MAX_ENTRIES = 10_000

    def __init__(
        self,
        attempts: int,
        window: float,
        *,
        free_failures: int = 3,
        backoff_max: float = 300.0,
        key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.window = window
        self.free_failures = free_failures
        self.backoff_max = backoff_max
        self._key = key or secrets.token_bytes(32)
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts: dict[str, _Backoff] = {}
        self._addresses: dict[str, deque[float]] = {}
        self._devices: dict[str, deque[float]] = {}

    # ---------------------------------------------------------------- device cookies

    def device_cookie(self, username: str) -> str:
        """A new device cookie for a browser that just signed in as ``username``."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._sign(nonce, username)}"

    def device_of(self, cookie: str | None, username: str) -> str | None:
        """The device id of a cookie issued to this account's browser, else None."""
        if not cookie or len(cookie) > 200:
            return None
        nonce, _, mac = cookie.partition(".")
        if not nonce or not hmac.compare_digest(mac, self._sign(nonce, username)):
            return None
        return nonce

    def _sign(self, nonce: str, username: str) -> str:
        message = f"{nonce}\0{_account_key(username)}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    # ---------------------------------------------------------------- the limits

    def retry_after(self, username: str, address: str, device: str | None = None) -> float:
        """Seconds until this attempt may be made (0 when it may now)."""
        now = self._clock()
        with self._lock:
            if device is not None:
                return self._window_wait(self._devices, device, now)
            wait = self._window_wait(self._addresses, address, now)
            backoff = self._accounts.get(_account_key(username))
            if backoff is not None and backoff.failures >= self.free_failures:
                delay = min(2.0 ** (backoff.failures - self.free_failures), self.backoff_max)
                wait = max(wait, backoff.last + delay - now)
            return max(0.0, wait)

    def failed(self, username: str, address: str, device: str | None = None) -> None:
        """Count a failed attempt."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            if device is not None:
                self._devices.setdefault(device, deque()).append(now)
                return
            self._addresses.setdefault(address, deque()).append(now)
            backoff = self._accounts.setdefault(_account_key(username), _Backoff())
            backoff.failures += 1
            backoff.last = now

    def succeeded(self, username: str, device: str | None = None) -> None:
        """A good login: this account's backoff (and this device's failures) start over."""
        with self._lock:
            self._accounts.pop(_account_key(username), None)
            if device is not None:
                self._devices.pop(device, None)

    def _window_wait(self, table: dict[str, deque[float]], key: str, now: float) -> float:
        failures = table.get(key)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.attempts:
            return 0.0
        return failures[-self.attempts] + self.window - now

    def _trim(self, now: float) -> None:
        """Forget entries nobody has failed with for a while, so guessing cannot fill the memory."""
        if len(self._accounts) + len(self._addresses) + len(self._devices) < self.MAX_ENTRIES:
            return
        horizon = now - max(self.window, self.backoff_max)
        for name in [k for k, v in self._accounts.items() if v.last <= horizon]:
            del self._accounts[name]
        for table in (self._addresses, self._devices):
            for key in [k for k, v in table.items() if not v or v[-1] <= horizon]:
                del table[key]
        if len(self._accounts) + len(self._addresses) + len(self._devices) >= self.MAX_ENTRIES:
            # Still full within the window: an attack from many names; keep the newest half.
            tables: tuple[dict[str, Any], ...] = (self._accounts, self._addresses, self._devices)
            for table in tables:
                for key in list(table)[: len(table) // 2]:
                    del table[key]


def _account_key(username: str) -> str:
    return username.strip().casefold()[:64]
