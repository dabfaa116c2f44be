"""`mko agent --site NAME --url URL --token-file F` runs a wake agent; `mko agent list` shows them all."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from mko.agents.registry import list_agents
from mko.cli.common import emit, open_session
from mko.platform.errors import InputError
from mko.platform.settings import get_settings
from mko.platform.validation import validate_interface, validate_site

agent_app = typer.Typer(
    help="Wake agents: run one on another LAN (`mko agent --site NAME --url URL --token-file F`), list them.",
    invoke_without_command=True,
)

TOKEN_ENV = "MKO_AGENT_TOKEN"  # noqa: S105 - the name of the variable, not a token
AGENT_COLUMNS = ("name", "site", "online", "seconds_since_heartbeat", "last_heartbeat_at", "host", "version")


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise InputError("token-file", f"cannot read {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise InputError("token-file", f"give --token-file FILE or set {TOKEN_ENV} (a token of role agent)")
    return token


@agent_app.callback()
def agent_main(
    ctx: typer.Context,
    site: Annotated[str | None, typer.Option(help="the site whose nodes this agent wakes")] = None,
    url: Annotated[
        str | None, typer.Option(help="the orchestrator's address, e.g. https://orchestrator:8080")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help=f"file holding the agent token (or set {TOKEN_ENV})")
    ] = None,
    name: Annotated[str | None, typer.Option(help="this agent's name [default: the hostname]")] = None,
    interface: Annotated[
        str | None, typer.Option(help="send magic packets from this interface when a node names none")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA certificate of the orchestrator's HTTPS")
    ] = None,
) -> None:
    """Run a wake agent in the foreground (what a systemd unit starts); `list` shows the agents."""
    if ctx.invoked_subcommand is not None:
        return
    from mko.agents.agent import AgentConfig, WakeAgent

    if not site:
        raise InputError("site", "required: the site whose nodes this agent wakes (--site NAME)")
    checked_site = validate_site(site, "site")
    if checked_site is None or checked_site == "local":
        raise InputError("site", "name a site other than 'local'")
    if not url or not url.startswith(("http://", "https://")):
        raise InputError("url", "required: the orchestrator's address, e.g. --url https://orchestrator:8080")
    config = AgentConfig(
        url=url,
        token=_token(token_file),
        site=checked_site,
        name=name or socket.gethostname(),
        interface=validate_interface(interface, "interface") if interface else None,
        ca_file=str(ca_file) if ca_file else None,
    )
    from mko.platform.logs import SafeFormatter

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=get_settings().log_level.upper(), handlers=[console])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per long poll is noise

    async def run() -> None:
        agent = WakeAgent(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.stop)
        await agent.run()

    asyncio.run(run())  # a refusal by the orchestrator is AgentRefusedError: exit 77 (mko.cli.root)


@agent_app.command("list")
def agent_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Every wake agent: its site, online or offline, and its last heartbeat."""
    with open_session() as session:
        emit(list_agents(session, get_settings()), AGENT_COLUMNS, as_json=as_json, title="Wake agents")
