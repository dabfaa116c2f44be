"""`mko lab …`: a virtual cluster and UPS on this machine, to rehearse a power cut end to end."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from mko.cli.common import EXIT_POWER_FAILURE, console, fail
from mko.lab.control import LAB_PORT, LabControl, LabPaths, lab_settings, lab_status, pid_alive
from mko.lab.daemon import LabDaemon, LabSpec
from mko.platform.errors import ConflictError, LabNotUpError
from mko.platform.settings import get_settings

lab_app = typer.Typer(
    help="A virtual lab: MicroK8s nodes with sshd, a real upsd, and mko watching them. Needs root.",
    no_args_is_help=True,
)

_UP_TIMEOUT = 180.0
_DOWN_TIMEOUT = 60.0

DirOption = Annotated[
    Path | None, typer.Option("--dir", help="the lab's directory (default from settings: data/lab)")
]


def _paths(directory: Path | None) -> LabPaths:
    return LabPaths.of(directory or get_settings().lab_dir)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise fail("mko lab needs root: it builds network namespaces and runs sshd and upsd (try sudo)")


def _tail(path: Path, size: int = 1200) -> str:
    try:
        return path.read_text(errors="replace")[-size:].strip()
    except OSError:
        return ""


@lab_app.command("up")
def lab_up(
    nodes: Annotated[int, typer.Option(help="virtual nodes (1-40)")] = 3,
    control_planes: Annotated[int, typer.Option(help="how many of them are control planes")] = 1,
    shutdown_delay: Annotated[
        int, typer.Option(help="seconds the power-loss rule waits before shutting down")
    ] = 5,
    boot_delay: Annotated[
        float, typer.Option(help="seconds a node takes to boot after its magic packet")
    ] = 2.0,
    battery_runtime: Annotated[
        float, typer.Option(help="seconds a full battery lasts on battery (0: never drains)")
    ] = 600.0,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="run the lab's orchestrator (API, web UI, rules)")
    ] = True,
    host: Annotated[str, typer.Option(help="address the lab's web UI listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the lab's web UI")] = LAB_PORT,
    prefix: Annotated[str, typer.Option(help="name prefix of the lab's network namespaces")] = "mkolab",
    orchestrator_on_ups: Annotated[
        bool,
        typer.Option(
            "--orchestrator-on-ups",
            help="mko's own host is on the lab's UPS: the UPS power-cycles its load after a shutdown, mko"
            " dies when the output goes off and boots when it returns",
        ),
    ] = False,
    ups_offdelay: Annotated[
        int, typer.Option(help="seconds from the power-cycle command until the UPS output goes off")
    ] = 5,
    ups_ondelay: Annotated[
        int, typer.Option(help="seconds mains must hold before the UPS output comes back")
    ] = 3,
    stable_for: Annotated[
        int, typer.Option(help="the restore rule acts once mains has held this many seconds")
    ] = 2,
    min_charge: Annotated[
        int | None, typer.Option(help="the restore rule waits for this battery charge (percent)")
    ] = None,
    shutdown_on: Annotated[
        str,
        typer.Option(
            help="the shutdown rule's event: power_loss (after --shutdown-delay) or runtime_low (when the"
            " battery will not last the shutdown)"
        ),
    ] = "power_loss",
    directory: DirOption = None,
) -> None:
    """Build the lab, boot every node until MicroK8s is Ready, and start mko watching its UPS."""
    spec = LabSpec(
        nodes,
        control_planes,
        shutdown_delay,
        boot_delay,
        serve,
        host,
        port,
        prefix,
        battery_runtime,
        orchestrator_on_ups=orchestrator_on_ups,
        ups_offdelay=ups_offdelay,
        ups_ondelay=ups_ondelay,
        stable_for=stable_for,
        min_charge=min_charge,
        shutdown_on=shutdown_on,
    )
    spec.check()
    _require_root()
    paths = _paths(directory)
    state = paths.read_state()
    if state is not None and pid_alive(state.get("pid")):
        raise ConflictError(
            f"a lab is already up in {paths.directory} (pid {state['pid']}): `mko lab down` first"
        )
    if state is not None:
        _clean_stale(paths, state)
    paths.directory.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "mko", "lab", "daemon", "--dir", str(paths.directory)]
    argv += ["--spec", json.dumps(spec.__dict__)]
    started = time.monotonic()
    with open(paths.daemon_log, "ab") as out:
        daemon = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    state = _wait_up(paths, daemon)
    elapsed = time.monotonic() - started
    console.print(
        f"lab up in {elapsed:.1f} s: {len(state['nodes'])} node(s) on {state['subnet']}", highlight=False
    )
    console.print(_status_view(LabControl(paths).status()))
    password_file = state.get("admin_password_file")
    if state.get("server"):
        console.print(f"web UI: {state['server']['url']}  (user admin)", highlight=False)
    if password_file:
        password = Path(password_file).read_text().strip()
        # Straight to the terminal, never to a log: the same rule as `mko serve`'s first admin.
        typer.echo(f"lab admin password: {password}  (kept in {password_file})")
    if not spec.serve:
        console.print("nothing watches the lab's UPS yet: run `sudo mko serve --lab`", highlight=False)
    dir_option = "" if directory is None else f" --dir {shlex.quote(str(paths.directory))}"
    console.print(
        f'this shell\'s mko on the lab (its database, keys and LAN): eval "$(mko lab env{dir_option})"',
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.print(
        "next: `mko lab power-fail`, watch `mko lab status` (or the Lab page), then `mko lab power-restore`",
        highlight=False,
    )


# What `mko lab env` points at the lab: every setting `lab_settings` changes that a CLI command reads.
_LAB_ENV = (
    "database_url",
    "ssh_known_hosts",
    "ssh_default_key",
    "secret_key_file",
    "log_dir",
    "backup_dir",
    "ansible_inventory_path",
    "ansible_facts_dir",
)


@lab_app.command("env")
def lab_env(
    unset: Annotated[bool, typer.Option("--unset", help="print the line that forgets the lab again")] = False,
    directory: DirOption = None,
) -> None:
    """Print the shell lines that put this shell's mko on the lab: eval "$(mko lab env)".

    The lab's database, SSH keys and known hosts, and MKO_NETNS: every command then sends its magic
    packets, SSH and UPS reads inside the lab's LAN (as root), never onto this machine's network.
    """
    names = [f"MKO_{name.upper()}" for name in (*_LAB_ENV, "lab_dir", "netns")]
    if unset:
        typer.echo("unset " + " ".join(names))
        return
    paths = _paths(directory)
    state = paths.read_state()
    if state is None or not pid_alive(state.get("pid")):
        raise fail(f"no lab is up in {paths.directory}: `sudo mko lab up` first")
    settings = lab_settings(paths, get_settings())
    values = {f"MKO_{name.upper()}": str(getattr(settings, name)) for name in _LAB_ENV}
    values |= {"MKO_LAB_DIR": str(paths.directory), "MKO_NETNS": str(state["orch"])}
    for name in names:
        typer.echo(f"export {name}={shlex.quote(values[name])}")


def _wait_up(paths: LabPaths, daemon: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + _UP_TIMEOUT
    with console.status("building the lab…") as status:
        while True:
            state = paths.read_state() or {}
            if state.get("status") == "up":
                return state
            if state.get("status") == "failed" or daemon.poll() is not None:
                daemon.wait(30)  # it tears down what it built before exiting
                why = state.get("error") or _tail(paths.daemon_log)
                raise fail(f"the lab did not come up: {why}", EXIT_POWER_FAILURE)
            if time.monotonic() > deadline:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(60)
                raise fail(f"the lab did not come up within {_UP_TIMEOUT:g} s", EXIT_POWER_FAILURE)
            status.update(f"building the lab: {state.get('step', 'starting')}…")
            time.sleep(0.1)


def _clean_stale(paths: LabPaths, state: dict[str, Any]) -> list[str]:
    """Remove what a lab whose daemon died left behind (namespaces and their processes, the server)."""
    from mko.lab.netns import cleanup_stale

    server_pid = (state.get("server") or {}).get("pid")
    if server_pid and pid_alive(server_pid):
        os.kill(server_pid, signal.SIGTERM)
    removed = cleanup_stale(state["prefix"]) if state.get("prefix") else []
    for stale in (paths.state, paths.control):
        stale.unlink(missing_ok=True)
    return removed


@lab_app.command("down")
def lab_down(directory: DirOption = None) -> None:
    """Stop everything the lab runs and delete its namespaces; its database and logs stay for reading."""
    _require_root()
    from mko.lab.netns import list_netns

    paths = _paths(directory)
    state = paths.read_state()
    if state is None:
        console.print(f"no lab is up in {paths.directory}", highlight=False)
        return
    pid = int(state.get("pid") or 0)
    started = time.monotonic()
    if pid and pid_alive(pid):
        try:
            LabControl(paths).down()
        except LabNotUpError:
            os.kill(pid, signal.SIGTERM)
        with console.status("tearing the lab down…"):
            deadline = time.monotonic() + _DOWN_TIMEOUT
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    _clean_stale(paths, state)
    prefix = state.get("prefix")
    left = [ns for ns in list_netns() if prefix and ns.startswith(f"{prefix}-")]
    alive = [p for p in (pid, (state.get("server") or {}).get("pid")) if pid_alive(p)]
    if left or alive:
        raise fail(f"lab partly left behind: namespaces {left}, processes {alive}", EXIT_POWER_FAILURE)
    console.print(
        f"lab down in {time.monotonic() - started:.1f} s: {len(state.get('namespaces', []))} namespaces and"
        f" every lab process gone; database and logs kept in {paths.directory}",
        highlight=False,
    )
    if os.environ.get("MKO_NETNS") == state.get("orch"):
        console.print('this shell still points at the lab: eval "$(mko lab env --unset)"', highlight=False)


@lab_app.command("status")
def lab_status_command(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="keep the view up to date (twice a second) until Ctrl-C")
    ] = False,
    directory: DirOption = None,
) -> None:
    """Show the nodes (power, MicroK8s, Ready, cordoned), the UPS and what mko is doing."""
    from mko.platform.db.session import make_engine, make_session_factory

    paths = _paths(directory)
    control = LabControl(paths)
    engine = make_engine(lab_settings(paths, get_settings()).database_url)

    def read() -> dict[str, Any]:
        with make_session_factory(engine)() as session:
            return lab_status(control, session)

    try:
        if as_json:
            typer.echo(json.dumps(read(), indent=2))
        elif watch:
            _watch(read)
        else:
            console.print(_status_view(read()))
    finally:
        engine.dispose()


def _watch(read: Any) -> None:
    """Redraw the status in place until Ctrl-C or until the lab goes down."""
    from rich.live import Live

    went_down = False
    with Live(_status_view(read()), console=console, refresh_per_second=4) as live:
        try:
            while not went_down:
                time.sleep(0.5)
                try:
                    live.update(_status_view(read()))
                except LabNotUpError:
                    went_down = True
        except KeyboardInterrupt:
            pass
    if went_down:
        console.print("the lab went down", highlight=False)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _status_view(status: dict[str, Any]) -> Group:
    """The nodes' table, the UPS line and what mko is doing (or did last)."""
    table = Table(title="lab nodes", title_justify="left")
    for column in ("node", "role", "ip", "mac", "power", "microk8s", "ready", "cordoned", "boots"):
        table.add_column(column, overflow="fold")
    for node in status["nodes"]:
        table.add_row(
            node["hostname"],
            node["role"].replace("_", " "),
            node["ip"],
            node["mac"],
            node["power"],
            node["microk8s"],
            _yes(node["ready"]),
            _yes(node["cordoned"]),
            str(node["boots"]),
        )
    ups = status["ups"]
    line = f"UPS {ups['name']}: {ups['status'] or 'unreachable'}, charge {ups['charge']:g} %"
    line += f", runtime {ups['runtime']} s, output {ups.get('output', 'on')}"
    if status.get("flap"):
        line += f"; flapping until {time.strftime('%H:%M:%S', time.localtime(status['flap']['until']))}"
    lines = [line]
    orchestrator = status.get("orchestrator") or {}
    if orchestrator.get("on_ups"):
        state = "running" if orchestrator.get("running") else f"down ({orchestrator.get('host')})"
        lines.append(
            f"orchestrator on the UPS: {state}, booted again {orchestrator.get('restarts', 0)} time(s)"
        )
    for op in status.get("running", []):
        lines.append(f"running: {op['kind']} #{op['id']} ({op['actor']}) {op['summary']}")
    if "operations" in status and not status.get("running"):
        lines += [
            f"last: {op['kind']} #{op['id']} {op['status']}: {op['summary']}"
            for op in status["operations"][:1]
        ]
    return Group(table, *(Text(text) for text in lines))


def _drive(action: str, reply: dict[str, Any]) -> None:
    ups = reply.get("ups")
    if ups:
        console.print(f"{action}: UPS now {ups['status']}, charge {ups['charge']:g} %", highlight=False)
    for hostname in reply.get("cut", []):
        console.print(f"  battery empty: {hostname} lost power", highlight=False)


@lab_app.command("power-fail")
def lab_power_fail(directory: DirOption = None) -> None:
    """Mains fails: the lab UPS goes on battery (upsd serves OB DISCHRG)."""
    _drive("power failed", LabControl(_paths(directory)).power_fail())


@lab_app.command("power-restore")
def lab_power_restore(directory: DirOption = None) -> None:
    """Mains returns: the lab UPS goes back on line (OL CHRG); ends a flap."""
    _drive("power restored", LabControl(_paths(directory)).power_restore())


@lab_app.command("battery")
def lab_battery(
    percent: Annotated[float, typer.Argument(help="charge in percent; on battery, 20 or less reports LB")],
    directory: DirOption = None,
) -> None:
    """Set the battery charge; on battery at 0 the UPS dies and every node still on loses power."""
    _drive(f"battery at {percent:g} %", LabControl(_paths(directory)).battery(percent))


@lab_app.command("flap")
def lab_flap(
    seconds: Annotated[float, typer.Argument(help="how long mains flaps (1-3600)")],
    period: Annotated[float, typer.Option(help="seconds between changes (at least 2)")] = 2.0,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait until the flapping ends")] = True,
    directory: DirOption = None,
) -> None:
    """Mains goes off and on every PERIOD seconds for SECONDS, then stays on."""
    control = LabControl(_paths(directory))
    reply = control.flap(seconds, period)
    until = reply["flap"]["until"]
    if not wait:
        console.print(f"flapping for {seconds:g} s", highlight=False)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console
    ) as bar:
        task = bar.add_task("mains flapping", total=seconds)
        while (status := control.status())["flap"]:
            bar.update(
                task,
                completed=seconds - max(0.0, until - time.time()),
                description=f"UPS {status['ups']['status']}",
            )
            time.sleep(0.2)
        bar.update(task, completed=seconds)
    console.print(f"flap over: UPS {control.status()['ups']['status']}", highlight=False)


@lab_app.command("kill-server")
def lab_kill_server(directory: DirOption = None) -> None:
    """The lab orchestrator's host loses power: `mko serve --lab` is killed (SIGKILL) and stays down."""
    killed = LabControl(_paths(directory)).kill_server()["killed"]
    console.print("orchestrator killed" if killed else "the orchestrator was not running", highlight=False)


@lab_app.command("start-server")
def lab_start_server(directory: DirOption = None) -> None:
    """Boot the lab orchestrator's host again: `mko serve --lab` starts and carries on from its database."""
    server = LabControl(_paths(directory)).start_server()["server"]
    console.print(f"orchestrator serving {server['url']} (pid {server['pid']})", highlight=False)


@lab_app.command("host-halt", hidden=True)
def lab_host_halt(directory: DirOption = None) -> None:
    """The lab orchestrator's host shutdown command (MKO_HOST_SHUTDOWN_COMMAND of `mko serve --lab`)."""
    LabControl(_paths(directory)).host_halt()
    console.print("the orchestrator's host is shutting down", highlight=False)


scenario_app = typer.Typer(help="Scenarios played end to end on a running lab.", no_args_is_help=True)
lab_app.add_typer(scenario_app, name="scenario")


@scenario_app.command("long-outage")
def lab_scenario_long_outage(
    outage: Annotated[
        float | None,
        typer.Option(
            "--outage",
            min=1,
            max=3600,
            help="seconds without mains [default: until 10 s after the UPS cut its load]",
        ),
    ] = None,
    directory: DirOption = None,
) -> None:
    """A cut that outlasts the battery: the cluster off in order, the UPS cuts its load, mko dies with it,
    mains returns, mko boots and brings every node back. Best with `mko lab up --orchestrator-on-ups`."""
    from mko.lab.scenario import LongOutage
    from mko.platform.db.session import make_engine, make_session_factory

    paths = _paths(directory)
    control = LabControl(paths)
    control.status()  # a clear "no lab is up" first
    engine = make_engine(lab_settings(paths, get_settings()).database_url)
    try:
        scenario = LongOutage(
            control,
            make_session_factory(engine),
            lambda line: console.print(line, highlight=False, markup=False),
            outage=outage,
        )
        scenario.run()
    finally:
        engine.dispose()


@lab_app.command("daemon", hidden=True)
def lab_daemon(
    directory: Annotated[Path, typer.Option("--dir")],
    spec: Annotated[str, typer.Option("--spec", help="LabSpec as JSON")],
) -> None:
    """Run the lab daemon in the foreground (`mko lab up` starts it in the background)."""
    from mko.platform.logs import configure_logging

    paths = LabPaths.of(directory)
    lab_spec = LabSpec(**json.loads(spec))
    lab_spec.check()
    daemon = LabDaemon(paths, lab_spec, get_settings())
    configure_logging(daemon.settings)
    raise typer.Exit(daemon.run())
