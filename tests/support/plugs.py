"""Wire-level fakes of smart plugs and a power webhook, each served by aiohttp on 127.0.0.1 in a thread
(in a lab's network namespace when given one).

They speak the devices' real paths and JSON (shapes from the vendors' API docs):

* :class:`ShellyGen1`: ``GET /shelly`` (no ``gen`` key), ``/relay/<n>?turn=on|off[&timer=s]``, HTTP Basic;
* :class:`ShellyGen2`: ``GET /shelly`` (``"gen": 2``), ``GET /rpc/Switch.Set|Switch.GetStatus``, RFC 7616
  digest with SHA-256, user ``admin``, realm = the device id; errors as ``{"code": -105, "message": …}``;
* :class:`Tasmota`: ``/cm?cmnd=Power<n> On|Off``, ``{"POWER<n>": "ON"}``, HTTP Basic or user/password
  query arguments, ``{"WARNING": "Need user=…"}`` with 401 (200 on old firmware);
* :class:`Webhook`: a MAAS-style power service recording every request, state as ``{"status": …}``.

And what the power drivers' tests do with them through the CLI, written once: :func:`serving` (a
fixture's body), :func:`device` (the options that point a node at a peer), :func:`configure`
(``mko wol configure``, a secret typed at its prompt), :func:`power` (``mko node power … --json``) and
:func:`power_state` (``mko node power NODE status``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

from aiohttp import web
from click.testing import Result
from typer.testing import CliRunner

from mko.cli.root import app
from mko.lab.netns import enter_netns

__all__ = [
    "HttpPeer",
    "ShellyGen1",
    "ShellyGen2",
    "Tasmota",
    "Webhook",
    "configure",
    "device",
    "power",
    "power_state",
    "serving",
]


class _Stoppable(Protocol):
    def stop(self) -> None: ...


PeerT = TypeVar("PeerT", bound=_Stoppable)


def serving(peer: PeerT) -> Iterator[PeerT]:
    """A fixture's body: ``yield from serving(Tasmota())`` hands the test the peer and stops it after."""
    try:
        yield peer
    finally:
        peer.stop()


def device(method: str, port: int, *, prefix: str | None = None, host: str = "127.0.0.1") -> list[str]:
    """The options that give a node ``method`` with its device at ``host:port`` (``--<prefix>-host``,
    ``--<prefix>-port``; the prefix is the method's name unless told)."""
    prefix = prefix or method
    return ["--method", method, f"--{prefix}-host", host, f"--{prefix}-port", str(port)]


def configure(cli: CliRunner, node_id: int, *options: str, secret: str | None = None) -> Result:
    """``mko wol configure NODE OPTIONS…``; ``secret`` is typed at the prompt of the option given as "-"."""
    return cli.invoke(
        app, ["wol", "configure", str(node_id), *options], input=None if secret is None else secret + "\n"
    )


def power(cli: CliRunner, node_id: int, action: str, *, timeout: float = 10) -> tuple[Result, Any]:
    """``mko node power NODE ACTION --json``: the result, and its JSON document (None when it printed
    none: a refusal before any attempt)."""
    result = cli.invoke(app, ["node", "power", str(node_id), action, "--json", "--timeout", f"{timeout:g}"])
    printed = result.exit_code in (0, 1) and result.stdout.strip()
    return result, (json.loads(result.stdout) if printed else None)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


class HttpPeer:
    """An aiohttp application served on 127.0.0.1:<free port> from a thread of its own (in the network
    namespace ``netns`` when given)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(self.app())
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    def _serve(self) -> None:
        # The loop's thread binds the socket: in the namespace it entered (setns acts on one thread).
        with enter_netns(self.netns) if self.netns else contextlib.nullcontext():
            self.loop.run_forever()

    def app(self) -> web.Application:
        raise NotImplementedError

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port: int = self.runner.addresses[0][1]
        return port

    def stop(self) -> None:
        """Stop serving and end the thread."""
        try:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()


class ShellyGen1(HttpPeer):
    """A Gen1 relay (Shelly 1 / Plug S): ``/relay/<n>``; a timer flips the relay back after N seconds."""

    def __init__(self, outputs: int = 1, user: str = "admin", password: str | None = None) -> None:
        self.on = [False] * outputs
        self.user, self.password = user, password
        self.requests: list[str] = []
        super().__init__()

    def _authorised(self, request: web.Request) -> bool:
        if not self.password:
            return True
        want = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return request.headers.get("Authorization") == want

    def _relay(self, i: int) -> dict[str, Any]:
        return {
            "ison": self.on[i],
            "has_timer": False,
            "timer_started": 0,
            "timer_duration": 0,
            "timer_remaining": 0,
            "overpower": False,
            "source": "http",
        }

    async def shelly(self, request: web.Request) -> web.Response:
        return _json({"type": "SHSW-1", "mac": "A4CF12F3B0C1", "auth": bool(self.password),
                      "fw": "20230913-112003/v1.14.0-gcb84623", "discoverable": False,
                      "num_outputs": len(self.on)})  # fmt: skip

    async def relay(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        if not self._authorised(request):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="Shelly"'})
        i = int(request.match_info["index"])
        if i >= len(self.on):
            return web.Response(status=404, text="Not Found")
        turn = request.query.get("turn")
        if turn not in (None, "on", "off", "toggle"):
            return web.Response(status=400, text="Bad turn!")
        if turn is not None:
            self.on[i] = (not self.on[i]) if turn == "toggle" else turn == "on"
            if "timer" in request.query:  # flip back after the timer, as the relay does
                back = not self.on[i]
                self.loop.call_later(float(request.query["timer"]), self.on.__setitem__, i, back)
        return _json(self._relay(i))

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_get("/shelly", self.shelly)
        application.router.add_route("*", r"/relay/{index:\d+}", self.relay)  # Gen1 ignores the method
        return application


class ShellyGen2(HttpPeer):
    """A Gen2+ switch (Plus 1PM, Plus Plug S): JSON-RPC over HTTP GET, digest auth with SHA-256."""

    def __init__(
        self, device_id: str = "shellyplus1pm-a8032ab636ec", outputs: int = 1, password: str | None = None
    ) -> None:
        self.id, self.password = device_id, password
        self.on = [False] * outputs
        self.nonces: set[str] = set()
        self.requests: list[str] = []
        super().__init__()

    def _challenge(self) -> web.Response:
        nonce = secrets.token_hex(8)
        self.nonces.add(nonce)
        header = f'Digest qop="auth", realm="{self.id}", nonce="{nonce}", algorithm=SHA-256'
        return web.Response(status=401, headers={"WWW-Authenticate": header}, text="401 Unauthorized")

    def _authorised(self, request: web.Request) -> bool:
        if not self.password:
            return True
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Digest "):
            return False
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', auth[7:]))

        def sha(text: str) -> str:
            return hashlib.sha256(text.encode()).hexdigest()

        if fields.get("username") != "admin" or fields.get("realm") != self.id:
            return False
        if fields.get("nonce") not in self.nonces:
            return False
        ha1 = sha(f"admin:{self.id}:{self.password}")
        ha2 = sha(f"{request.method}:{fields['uri']}")
        parts = (ha1, fields["nonce"], fields["nc"], fields["cnonce"], fields["qop"], ha2)
        return fields.get("response") == sha(":".join(parts))

    def _info(self) -> dict[str, Any]:
        return {
            "name": None,
            "id": self.id,
            "mac": "A8032AB636EC",
            "slot": 1,
            "model": "SNSW-001P16EU",
            "gen": 2,
            "fw_id": "20241011-114455/1.4.4-g6d2a586",
            "ver": "1.4.4",
            "app": "Plus1PM",
            "auth_en": bool(self.password),
            "auth_domain": self.id if self.password else None,
        }

    def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "Shelly.GetDeviceInfo":
            return self._info()
        if method not in ("Switch.GetStatus", "Switch.Set"):
            raise ValueError(-114, f"Method {method} failed: No handler for {method}")
        if "id" not in params:
            raise ValueError(-103, "Missing required 'id'")
        i = int(params["id"])
        if i >= len(self.on):
            raise ValueError(-105, f"Argument 'id', value {i} not found!")
        if method == "Switch.GetStatus":
            return {
                "id": i,
                "source": "HTTP_in",
                "output": self.on[i],
                "apower": 0.0,
                "voltage": 230.1,
                "aenergy": {"total": 0.0, "by_minute": [0, 0, 0], "minute_ts": int(time.time())},
                "temperature": {"tC": 41.2, "tF": 106.2},
            }
        was = self.on[i]
        self.on[i] = str(params.get("on")).lower() == "true"
        if "toggle_after" in params:
            self.loop.call_later(float(params["toggle_after"]), self.on.__setitem__, i, not self.on[i])
        return {"was_on": was}

    async def shelly(self, request: web.Request) -> web.Response:
        return _json(self._info())

    async def rpc(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        method = request.match_info["method"]
        if method != "Shelly.GetDeviceInfo" and not self._authorised(request):
            return self._challenge()
        try:
            return _json(self._call(method, dict(request.query)))
        except ValueError as exc:
            code, message = exc.args
            return _json({"code": code, "message": message}, 500 if code == -114 else 400)

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_get("/shelly", self.shelly)
        application.router.add_get(r"/rpc/{method:[A-Za-z0-9_.]+}", self.rpc)
        return application


class Tasmota(HttpPeer):
    """A Tasmota plug or multi-relay board: ``/cm?cmnd=Power<n> [On|Off|Toggle]``."""

    def __init__(
        self,
        relays: int = 1,
        password: str | None = None,
        new_firmware: bool = True,
        netns: str | None = None,
        on: bool = False,
    ) -> None:
        self.on = [on] * relays
        self.password, self.new_firmware = password, new_firmware
        self.commands: list[str] = []
        super().__init__(netns)

    def _authorised(self, request: web.Request) -> bool:
        if not self.password:
            return True
        basic = "Basic " + base64.b64encode(f"admin:{self.password}".encode()).decode()
        if self.new_firmware and request.headers.get("Authorization") == basic:
            return True
        return request.query.get("user") == "admin" and request.query.get("password") == self.password

    async def cm(self, request: web.Request) -> web.Response:
        if not self._authorised(request):  # 401 since 2022; older firmware answered 200 with the same body
            status = 401 if self.new_firmware else 200
            return _json({"WARNING": "Need user=<username>&password=<password>"}, status)
        command = request.query.get("cmnd", "").strip()
        self.commands.append(command)
        if not command:
            return _json({"WARNING": "Enter command cmnd="})
        match = re.fullmatch(r"(?i)power(\d*)(?:\s+(\S+))?", command)
        if not match:
            return _json({"Command": "Unknown"})
        index = int(match.group(1) or 1)
        if not 1 <= index <= len(self.on):
            return _json({"Command": "Unknown"})
        argument = (match.group(2) or "").lower()
        if argument in ("on", "1", "true"):
            self.on[index - 1] = True
        elif argument in ("off", "0", "false"):
            self.on[index - 1] = False
        elif argument in ("toggle", "2"):
            self.on[index - 1] = not self.on[index - 1]
        elif argument:
            return _json({"Command": "Error"})
        key = "POWER" if len(self.on) == 1 else f"POWER{index}"
        return _json({key: "ON" if self.on[index - 1] else "OFF"})

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_route("*", "/cm", self.cm)
        return application


class Webhook(HttpPeer):
    """A MAAS-style power service: ``POST /machines/<name>/on|off``, ``GET /machines/<name>`` answering
    ``{"status": "running"|"stopped"}``; every request recorded as (method, path, headers, body); a
    request without the expected API key header is refused with 401."""

    def __init__(self, api_key: str | None = None, key_header: str = "X-Api-Key") -> None:
        self.api_key, self.key_header = api_key, key_header
        self.running: dict[str, bool] = {}
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.fail_next: list[int] = []  # status codes to answer the next requests with
        super().__init__()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append((request.method, request.path, dict(request.headers), body))
        if self.fail_next:
            return _json({"error": "busy"}, self.fail_next.pop(0))
        if self.api_key and request.headers.get(self.key_header) != self.api_key:
            return _json({"error": "unauthorised"}, 401)
        name, action = request.match_info["name"], request.match_info.get("action")
        if action is None:
            return _json({"name": name, "status": "running" if self.running.get(name) else "stopped"})
        if request.method != "POST":
            return _json({"error": "use POST"}, 405)
        self.running[name] = action == "on"
        return _json({"name": name, "accepted": action})

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_route("*", "/machines/{name}", self.handle)
        application.router.add_route("*", "/machines/{name}/{action:on|off}", self.handle)
        return application


def power_state(cli: CliRunner, node_id: int) -> str:
    """``mko node power NODE status --json``: the state the node's driver reads (on, off, unknown)."""
    result = cli.invoke(app, ["node", "power", str(node_id), "status", "--json"])
    assert result.exit_code == 0, result.output
    state: str = json.loads(result.stdout)["state"]
    return state
