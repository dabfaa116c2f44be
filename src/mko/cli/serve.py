"""`mko serve`: the API and the web UI (and the lab's, with --lab)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mko.cli.common import keep_long_lived_out_of_collections
from mko.cli.db import print_upgrade_step
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade_database
from mko.platform.logs import configure_logging
from mko.platform.settings import Settings, get_settings


def _first_admin(settings: Settings) -> None:
    """On the first run create ``admin``; a generated password is printed once, never logged."""
    from mko.access.users import ensure_first_admin

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            given = settings.admin_password.get_secret_value() if settings.admin_password else None
            generated = ensure_first_admin(session, settings, given)
    finally:
        engine.dispose()
    if generated:
        # Straight to the terminal, not through logging: the log file must never hold a password.
        typer.echo(
            f"\nFirst run: created user 'admin' with password  {generated}\n"
            "Sign in at the web UI and change it with `mko user passwd admin`.\n"
        )


def serve(
    host: Annotated[
        str | None, typer.Option(help="listen address (default from settings: 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default from settings: 8080)")] = None,
    lab: Annotated[
        bool, typer.Option("--lab", help="serve the virtual lab of `mko lab up` (its database, its LAN)")
    ] = False,
    lab_dir: Annotated[
        Path | None, typer.Option("--lab-dir", help="the lab's directory (default from settings: data/lab)")
    ] = None,
) -> None:
    """Serve the REST API (/api, /docs) and the web UI (/)."""
    import uvicorn

    from mko.app import create_app

    settings = get_settings()
    control = None
    if lab:
        from mko.lab.control import LAB_PORT, LabControl, LabPaths, lab_settings

        paths = LabPaths.of(lab_dir or settings.lab_dir)
        control = LabControl(paths)
        control.status()  # a clear "no lab is up" before anything else happens
        settings = lab_settings(paths, settings)
    configure_logging(settings)
    # The same protected upgrade as `mko db upgrade`: an existing database is backed up before a newer
    # mko changes its schema, and restored if that fails.
    upgrade_database(settings.database_url, backup_dir=settings.backup_dir, progress=print_upgrade_step)
    _first_admin(settings)
    host = host or settings.host
    port = port or (settings.port if control is None else LAB_PORT)
    if settings.instance_url is None:  # shown by `mko cluster-status` next to this instance
        settings = settings.model_copy(update={"instance_url": _own_url(host, port)})
    app = create_app(settings, lab=control)
    keep_long_lived_out_of_collections()
    if control is None:
        url = _own_url(host, port) if host not in ("0.0.0.0", "::", "") else f"http://127.0.0.1:{port}"  # noqa: S104
        typer.echo(f"\nmko is serving: web UI {url}/   API docs {url}/docs   (Ctrl-C stops it)\n")
        # proxy_headers off: uvicorn would believe X-Forwarded-For from loopback; the app applies
        # MKO_TRUSTED_PROXIES itself (mko.app), so the setting alone decides whom to believe.
        uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=False)
        return
    _serve_lab(app, control, host, port)


def _own_url(host: str, port: int) -> str:
    """Where this server answers; a wildcard address is named by the machine's host name instead."""
    import socket

    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming, not binding
        host = socket.getfqdn()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve_lab(app: Any, control: Any, host: str, port: int) -> None:
    """Listen on this machine, then work inside the lab's LAN: its UPS, SSH and magic packets are there."""
    import socket

    import uvicorn

    from mko.lab.netns import enter_netns

    # NOTE: a socket belongs to the network namespace it was created in; entering the lab's orch
    # namespace afterwards leaves the listener reachable from this machine's own browser.
    listener = socket.create_server((host, port), reuse_port=False)
    state = control.paths.read_state() or {}
    url = f"http://{host}:{port}"
    control.register_server(os.getpid(), url)
    typer.echo(f"serving the lab at {url}")
    with enter_netns(state["orch"]):  # every thread uvicorn and mko start from here on lives in the lab
        uvicorn.Server(uvicorn.Config(app, log_config=None, proxy_headers=False)).run(sockets=[listener])
