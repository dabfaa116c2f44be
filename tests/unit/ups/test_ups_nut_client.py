"""The NUT client's wire handling: quoting, escapes, ERR codes, timeouts and reconnection.

The happy path runs against the real upsd in tests/integration/ups/test_ups_nut.py. Failure modes a
healthy upsd never shows (silence, garbage, a dropped connection mid-command) are produced here by a
small TCP server on loopback that speaks the same line protocol.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from mko.platform.errors import NutConnectionError, NutProtocolError, NutResponseError
from mko.ups.nut import NutClient, quote, split_line

pytestmark = pytest.mark.anyio

Reply = Callable[[str], str | None]  # command line -> reply text (may span lines), None = stay silent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class LineServer:
    """Answers each command with ``reply(command)``; records commands and connections."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.commands: list[str] = []
        self.connections = 0
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while line := await reader.readline():
                command = line.decode().rstrip("\n")
                self.commands.append(command)
                answer = self.reply(command)
                if answer == "<close>":
                    break
                if answer is not None:
                    writer.write(answer.encode())
                    await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[LineServer]:
    line_server = LineServer(reply)
    server = await asyncio.start_server(line_server.handle, "127.0.0.1", 0)
    line_server.port = server.sockets[0].getsockname()[1]
    try:
        yield line_server
    finally:
        server.close()
        for writer in line_server.writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let the handlers see their connections closed


def upsd_like(command: str) -> str | None:  # noqa: PLR0911 - one reply per scripted command
    """A upsd with one UPS, 'myups'; `GET VAR myups slow` never answers."""
    words = split_line(command)
    if words[:1] in (["USERNAME"], ["PASSWORD"]):
        return "OK\n"
    if words == ["LIST", "VAR", "myups"]:
        return (
            "BEGIN LIST VAR myups\n"
            'VAR myups ups.status "OL CHRG"\n'
            'VAR myups device.description "rack \\"A\\" \\\\ left"\n'
            "VAR myups battery.charge 100\n"
            "END LIST VAR myups\n"
        )
    if words == ["LIST", "VAR", "gone"]:
        return "ERR DRIVER-NOT-CONNECTED\n"
    if words == ["GET", "VAR", "myups", "slow"]:
        return None
    if words == ["GET", "VAR", "myups", "bad"]:
        return "WHAT?\n"
    if words == ["GET", "VAR", "myups", "drop"]:
        return "<close>"
    if words[:3] == ["GET", "VAR", "myups"]:
        return f'VAR myups {words[3]} "42"\n'
    if words == ["LIST", "UPS"]:
        return 'BEGIN LIST UPS\nUPS myups "Rack UPS"\nEND LIST UPS\n'
    if words == ["LOGOUT"]:
        return "OK Goodbye\n"
    return commands_and_logins(words)


def commands_and_logins(words: list[str]) -> str:  # noqa: PLR0911 - one reply per scripted command
    """LIST CMD, INSTCMD, LOGIN and NUMLOGINS of 'myups' (LOGIN of 'other' is refused)."""
    if words == ["LIST", "CMD", "myups"]:
        return (
            "BEGIN LIST CMD myups\nCMD myups shutdown.return\nCMD myups shutdown.stayoff\n"
            "END LIST CMD myups\n"
        )
    if words == ["INSTCMD", "myups", "shutdown.return"]:
        return "OK\n"
    if words == ["INSTCMD", "myups", "load.off.delay", "20"]:
        return "OK TRACKING 1bd5d2d5-61d2-4b55-9a9a-4c1b7c4a0a11\n"
    if words[:1] == ["INSTCMD"]:
        return "ERR CMD-NOT-SUPPORTED\n"
    if words == ["LOGIN", "myups"]:
        return "OK\n"
    if words[:1] == ["LOGIN"]:
        return "ERR ACCESS-DENIED\n"
    if words == ["GET", "NUMLOGINS", "myups"]:
        return "NUMLOGINS myups 2\n"
    return "ERR UNKNOWN-COMMAND\n"


def test_quote_and_split_round_trip() -> None:
    for value in ("plain", "two words", 'say "hi"', "back\\slash", "", "tab\there"):
        assert split_line(f"VAR u x {quote(value)}") == ["VAR", "u", "x", value]
    assert quote("myups") == "myups"
    with pytest.raises(ValueError, match="line breaks"):
        quote("a\nLOGOUT")
    with pytest.raises(NutProtocolError):
        split_line('VAR u x "unterminated')


async def test_list_vars_unescapes_values_and_login_quotes_the_password() -> None:
    async with serving(upsd_like) as server:
        client = NutClient("127.0.0.1", server.port, username="monuser", password='p w"d', timeout=1)
        variables = await client.list_vars("myups")
        assert variables == {
            "ups.status": "OL CHRG",
            "device.description": 'rack "A" \\ left',
            "battery.charge": "100",
        }
        assert await client.get_var("myups", "ups.load") == "42"
        assert await client.list_ups() == {"myups": "Rack UPS"}
        await client.logout()
    assert server.commands[:2] == ["USERNAME monuser", 'PASSWORD "p w\\"d"']
    assert server.commands[-1] == "LOGOUT"
    assert server.connections == 1  # one persistent connection for every command
    assert 'p w"d' not in repr(client)


async def test_err_codes_are_typed_and_keep_the_connection() -> None:
    async with serving(upsd_like) as server:
        client = NutClient("127.0.0.1", server.port, password="secret", timeout=1)
        with pytest.raises(NutResponseError) as caught:
            await client.list_vars("gone")
        assert caught.value.code == "DRIVER-NOT-CONNECTED" and caught.value.comm_loss
        with pytest.raises(NutResponseError) as unknown:
            await client.get_var("other", "ups.status")
        assert not unknown.value.comm_loss
        assert client.connected
        assert (await client.list_vars("myups"))["ups.status"] == "OL CHRG"
        await client.close()
    assert server.connections == 1
    assert "secret" not in str(caught.value) + str(unknown.value)


async def test_silence_times_out_closes_and_the_next_call_reconnects() -> None:
    async with serving(upsd_like) as server:
        client = NutClient("127.0.0.1", server.port, password="secret", timeout=0.3)
        await client.connect()
        with pytest.raises(NutConnectionError, match=r"did not answer GET VAR within 0.3s"):
            await client.get_var("myups", "slow")
        assert not client.connected  # a late reply must never be read as the next answer
        assert await client.get_var("myups", "ups.status") == "42"
        with pytest.raises(NutConnectionError, match="closed the connection"):
            await client.get_var("myups", "drop")
        with pytest.raises(NutProtocolError):
            await client.get_var("myups", "bad")
        assert not client.connected
        assert await client.get_var("myups", "battery.charge") == "42"
        await client.logout()
    assert server.connections == 4


async def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = NutClient("127.0.0.1", port, timeout=1)
    with pytest.raises(NutConnectionError, match=f"cannot reach upsd at 127.0.0.1:{port}"):
        await client.list_vars("myups")
    await client.logout()  # nothing to say goodbye to: no error


async def test_instant_commands_are_listed_sent_and_answered() -> None:
    async with serving(upsd_like) as server:
        client = NutClient("127.0.0.1", server.port, username="mko", password="secret", timeout=1)
        assert await client.list_cmds("myups") == ["shutdown.return", "shutdown.stayoff"]
        assert await client.instcmd("myups", "shutdown.return") == "OK"
        assert await client.instcmd("myups", "load.off.delay", "20") == (
            "OK TRACKING 1bd5d2d5-61d2-4b55-9a9a-4c1b7c4a0a11"
        )
        with pytest.raises(NutResponseError) as refused:
            await client.instcmd("myups", "load.off")
        assert refused.value.code == "CMD-NOT-SUPPORTED" and client.connected
        await client.logout()
    assert server.commands[2:5] == [
        "LIST CMD myups",
        "INSTCMD myups shutdown.return",
        "INSTCMD myups load.off.delay 20",
    ]


async def test_a_monitor_logs_in_as_secondary_and_a_refusal_only_stops_the_login() -> None:
    async with serving(upsd_like) as server:
        client = NutClient(
            "127.0.0.1", server.port, username="mko", password="secret", timeout=1, login="myups"
        )
        assert (await client.list_vars("myups"))["ups.status"] == "OL CHRG"
        assert client.logged_in and await client.num_logins("myups") == 2
        await client.release_login()  # a primary waiting for mko (HOSTSYNC) may go on
        assert not client.logged_in
        await client.list_vars("myups")
        assert not client.logged_in
        client.resume_login()
        await client.close()
        await client.list_vars("myups")
        assert client.logged_in
        await client.logout()
        refused = NutClient(
            "127.0.0.1", server.port, username="mko", password="secret", timeout=1, login="other"
        )
        await refused.list_vars("myups")  # reading goes on without the login
        assert not refused.logged_in and "ACCESS-DENIED" in (refused.login_error or "")
        await refused.logout()
        anonymous = NutClient("127.0.0.1", server.port, timeout=1, login="myups")
        await anonymous.list_vars("myups")  # no credentials: no LOGIN is tried
        await anonymous.logout()
    logins = [c for c in server.commands if c.startswith(("LOGIN", "LOGOUT"))]
    assert logins == ["LOGIN myups", "LOGOUT", "LOGIN myups", "LOGOUT", "LOGIN other", "LOGOUT", "LOGOUT"]
