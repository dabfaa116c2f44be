"""A small asyncio client of the NUT network protocol (upsd, TCP 3493), for reading UPS variables.

Why not ``aionut`` (the library Home Assistant uses)? It lacks what a monitor that must never
misread a power cut needs: no ``GET VAR``, no ``LOGOUT``, errors only as message strings (we must tell
``ERR DRIVER-NOT-CONNECTED`` / ``ERR DATA-STALE`` — comm loss — from ``ERR UNKNOWN-UPS`` — bad
configuration), values cut at quotes without undoing NUT's ``\\"`` / ``\\\\`` escapes, and the password
sent unquoted. The protocol is a few line-based commands, so this module speaks it directly:

    -> LIST VAR myups                      <- BEGIN LIST VAR myups
                                           <- VAR myups ups.status "OL CHRG"   (one line per variable)
                                           <- END LIST VAR myups
    -> GET VAR myups battery.charge        <- VAR myups battery.charge "100"
    -> USERNAME / PASSWORD x               <- OK                (checked by upsd only at privileged commands)
    -> LOGIN myups                         <- OK                (a secondary monitor: "upsmon secondary")
    -> GET NUMLOGINS myups                 <- NUMLOGINS myups 1 (what a NUT primary waits on: HOSTSYNC)
    -> LIST CMD myups                      <- BEGIN LIST CMD myups, CMD myups shutdown.return, END LIST …
    -> INSTCMD myups shutdown.return       <- OK                (upsd.users "instcmds"; or OK TRACKING <id>)
    -> LOGOUT                              <- OK Goodbye
    any command                            <- ERR <CODE> [detail]

One connection is kept open and reused (one command at a time). Every exchange has a timeout; a timeout
or a broken connection closes the socket (a late reply would otherwise be read as the answer to the
next command) and the next call reconnects. Backoff between reconnections is the caller's business
(:mod:`mko.ups.monitor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Self

from mko.platform.errors import NutConnectionError, NutError, NutProtocolError, NutResponseError

__all__ = ["DEFAULT_PORT", "NutClient", "quote", "split_line"]

log = logging.getLogger("mko.ups.nut")

DEFAULT_PORT = 3493
_LINE_LIMIT = 64 * 1024


def quote(value: str) -> str:
    """Quote an argument for a NUT command when it needs it (spaces, quotes, backslashes, empty)."""
    if any(ch in "\r\n\0" for ch in value):
        raise ValueError("a NUT argument cannot contain line breaks or NUL")
    if value and not any(ch in value for ch in ' "\\\t'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_line(line: str) -> list[str]:
    """Split a reply line into words; double quotes group words and backslash escapes the next character."""
    words: list[str] = []
    current: list[str] = []
    in_word = in_quotes = escaped = False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = in_word = True
        elif ch == '"':
            in_quotes = not in_quotes
            in_word = True
        elif ch in " \t" and not in_quotes:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(ch)
            in_word = True
    if in_quotes or escaped:
        raise NutProtocolError(f"unterminated quote or escape in reply: {line!r}")
    if in_word:
        words.append("".join(current))
    return words


class NutClient:
    """One persistent, lazily (re)opened connection to a upsd; every call is bounded by ``timeout``."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 3.0,
        login: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.timeout = timeout
        # LOGIN to this UPS on every connection (a secondary monitor a NUT primary waits for);
        # needs a user and password with "upsmon secondary" in upsd.users.
        self.login_ups = login if username is not None and password is not None else None
        self.logged_in = False
        self.login_error: str | None = None
        self._login_released = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"NutClient({self.host}:{self.port})"  # never the password

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._writer is not None

    @property
    def address(self) -> str:
        """host:port, for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def connect(self) -> None:
        """Open the connection (and send USERNAME/PASSWORD when set); a no-op when already open."""
        async with self._lock:
            await self._ensure_connected()

    async def list_vars(self, ups: str) -> dict[str, str]:
        """Every variable of ``ups`` with its value (``LIST VAR``)."""
        async with self._lock:
            lines = await self._exchange(f"LIST VAR {quote(ups)}", listing=("VAR", ups))
        variables: dict[str, str] = {}
        for words in lines:
            if len(words) != 4 or words[0] != "VAR" or words[1] != ups:
                raise NutProtocolError(f"unexpected line in LIST VAR {ups}: {' '.join(words)!r}")
            variables[words[2]] = words[3]
        return variables

    async def get_var(self, ups: str, name: str) -> str:
        """One variable of ``ups`` (``GET VAR``)."""
        async with self._lock:
            [words] = await self._exchange(
                f"GET VAR {quote(ups)} {quote(name)}", expect=["VAR", ups, name, ""]
            )
        return words[3]

    async def list_ups(self) -> dict[str, str]:
        """The UPS names upsd serves, with their descriptions (``LIST UPS``)."""
        async with self._lock:
            lines = await self._exchange("LIST UPS", listing=("UPS", None))
        return {words[1]: words[2] if len(words) > 2 else "" for words in lines if len(words) >= 2}

    async def list_cmds(self, ups: str) -> list[str]:
        """The instant commands ``ups`` offers (``LIST CMD``)."""
        async with self._lock:
            lines = await self._exchange(f"LIST CMD {quote(ups)}", listing=("CMD", ups))
        commands = []
        for words in lines:
            if len(words) != 3 or words[0] != "CMD" or words[1] != ups:
                raise NutProtocolError(f"unexpected line in LIST CMD {ups}: {' '.join(words)!r}")
            commands.append(words[2])
        return commands

    async def instcmd(self, ups: str, command: str, value: str | None = None) -> str:
        """Send an instant command; returns upsd's answer (``OK``, ``OK TRACKING <id>``); ERR raises."""
        line = f"INSTCMD {quote(ups)} {quote(command)}" + (f" {quote(value)}" if value is not None else "")
        async with self._lock:
            [words] = await self._exchange(line)
        if words[:1] != ["OK"]:
            raise NutProtocolError(f"unexpected reply to INSTCMD: {' '.join(words)!r}")
        return " ".join(words)

    async def num_logins(self, ups: str) -> int:
        """How many monitors are logged in to ``ups`` (``GET NUMLOGINS``)."""
        async with self._lock:
            [words] = await self._exchange(f"GET NUMLOGINS {quote(ups)}", expect=["NUMLOGINS", ups, ""])
        try:
            return int(words[2])
        except ValueError:
            raise NutProtocolError(f"unexpected reply to GET NUMLOGINS: {' '.join(words)!r}") from None

    async def release_login(self) -> None:
        """Log out and go on reading without LOGIN (until :meth:`resume_login`): a primary waits no more."""
        async with self._lock:
            if self.logged_in and self._writer is not None:
                with contextlib.suppress(NutError):
                    await self._exchange("LOGOUT", connect=False)
                self._close()
            self._login_released = True

    @property
    def login_released(self) -> bool:
        """Whether :meth:`release_login` holds the LOGIN back."""
        return self._login_released

    def resume_login(self) -> None:
        """LOGIN again from the next connection on."""
        self._login_released = False

    async def logout(self) -> None:
        """Say goodbye (``LOGOUT``) and close; errors while leaving are ignored."""
        async with self._lock:
            if self._writer is not None:
                with contextlib.suppress(NutError):
                    await self._exchange("LOGOUT", connect=False)
            self._close()

    async def close(self) -> None:
        """Close the connection without LOGOUT."""
        async with self._lock:
            self._close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.logout()

    # ------------------------------------------------------------------ internals (hold self._lock)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self.logged_in = False

    async def _ensure_connected(self) -> None:
        if self._writer is not None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, limit=_LINE_LIMIT
                )
        except TimeoutError:
            raise NutConnectionError(
                f"upsd at {self.address} did not answer within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise NutConnectionError(f"cannot reach upsd at {self.address}: {exc.strerror or exc}") from None
        try:
            if self.username is not None:
                await self._exchange(f"USERNAME {quote(self.username)}", connect=False, expect=["OK"])
            if self._password is not None:
                await self._exchange(f"PASSWORD {quote(self._password)}", connect=False, expect=["OK"])
            if self.login_ups is not None and not self._login_released:
                await self._login(self.login_ups)
        except BaseException:
            self._close()
            raise

    async def _login(self, ups: str) -> None:
        try:
            await self._exchange(f"LOGIN {quote(ups)}", connect=False, expect=["OK"])
        except NutResponseError as exc:
            # Reading needs no login: say why once, and go on as a plain client.
            if self.login_error is None:
                log.warning(
                    "upsd at %s refused LOGIN %s (%s): a NUT primary will not wait for mko; give user %r"
                    " 'upsmon secondary' in upsd.users",
                    self.address,
                    ups,
                    exc,
                    self.username,
                )
            self.login_error = str(exc)
            return
        self.logged_in = True
        self.login_error = None

    async def _exchange(
        self,
        command: str,
        *,
        listing: tuple[str, str | None] | None = None,
        connect: bool = True,
        expect: list[str] | None = None,
    ) -> list[list[str]]:
        """Send one command and read its reply: one line, or the lines between BEGIN and END LIST."""
        if connect:
            await self._ensure_connected()
        if self._reader is None or self._writer is None:
            raise NutConnectionError(f"not connected to upsd at {self.address}")
        # Messages name the command without its arguments, so a password never reaches a log line.
        parts = command.split()
        verb = " ".join(parts[:2]) if parts[0] in ("GET", "LIST") else parts[0]
        try:
            async with asyncio.timeout(self.timeout):
                self._writer.write(command.encode() + b"\n")
                await self._writer.drain()
                first = await self._read_words(verb)
                if listing is None:
                    # expect: the reply's words, "" matching any one word.
                    if expect is not None and (
                        len(first) != len(expect)
                        or any(w and w != f for w, f in zip(expect, first, strict=True))
                    ):
                        raise NutProtocolError(f"unexpected reply to {verb}: {' '.join(first)!r}")
                    return [first]
                kind, name = listing
                header = ["BEGIN", "LIST", kind] + ([name] if name is not None else [])
                if first != header:
                    raise NutProtocolError(f"unexpected reply to {verb}: {' '.join(first)!r}")
                footer = ["END", *header[1:]]
                lines: list[list[str]] = []
                while (words := await self._read_words(verb)) != footer:
                    lines.append(words)
                return lines
        except TimeoutError:
            self._close()
            raise NutConnectionError(
                f"upsd at {self.address} did not answer {verb} within {self.timeout:g}s"
            ) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._close()
            raise NutConnectionError(f"connection to upsd at {self.address} lost: {exc}") from None
        except NutProtocolError:
            self._close()  # out of step with the server: start again on a fresh connection
            raise

    async def _read_words(self, verb: str) -> list[str]:
        assert self._reader is not None
        raw = await self._reader.readline()
        if not raw:
            self._close()
            raise NutConnectionError(f"upsd at {self.address} closed the connection")
        if not raw.endswith(b"\n"):
            raise asyncio.IncompleteReadError(raw, None)
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        words = split_line(line)
        if words[:1] == ["ERR"]:
            code = words[1] if len(words) > 1 else "UNKNOWN"
            raise NutResponseError(code, verb, " ".join(words[2:]))
        if not words:
            raise NutProtocolError(f"empty reply to {verb}")
        return words
