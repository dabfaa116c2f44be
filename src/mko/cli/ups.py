"""`mko ups …` — UPSes on NUT servers, their status and events, the seed's power rules, the monitor."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import datetime
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.table import Table

from mko.cli.common import console, emit, fail, open_session, open_wiring
from mko.cluster.schemas import OutagePublic
from mko.platform.db.models.rules import ClusterAction
from mko.platform.db.models.ups import PowerEvent
from mko.platform.db.session import is_postgresql
from mko.platform.logs import configure_logging
from mko.platform.secrets import SecretBox
from mko.platform.settings import get_settings
from mko.rules import service as rules_service
from mko.rules.schemas import RuleCreate, RulePublic
from mko.rules.service import set_rule_enabled
from mko.ups import outages, service
from mko.ups.schemas import UpsCreate, UpsEventPublic, UpsPublic

ups_app = typer.Typer(
    help="UPSes over NUT: add, list, show, remove, status, events, power rules, monitor.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
UPS_COLUMNS = ("id", "name", "device", "username", "password_set", "power_cycle", "description")
OUTAGE_COLUMNS = (
    "id",
    "cluster_id",
    "ups_id",
    "event",
    "phase",
    "nodes_up",
    "nodes_off",
    "started_at",
    "summary",
)
RULE_COLUMNS = (
    "id",
    "name",
    "ups_id",
    "cluster_id",
    "power_event",
    "cluster_action",
    "battery_threshold",
    "action_delay",
    "priority",
    "min_charge",
    "stable_for",
    "enabled",
    "execution_count",
    "success_count",
    "failure_count",
    "last_triggered_at",
)


# ------------------------------------------------------------------------------------ UPSes


@ups_app.command("add")
def ups_add(
    name: Annotated[str, typer.Argument(help="mko's name for this UPS")],
    device: Annotated[str, typer.Argument(help="upsname[@host[:port]], e.g. myups@192.168.1.5:3493")],
    username: Annotated[str | None, typer.Option(help="upsd user (upsd.users)")] = None,
    password: Annotated[str | None, typer.Option(help="upsd password (stored encrypted)")] = None,
    description: Annotated[str, typer.Option(help="free text")] = "",
    power_cycle: Annotated[
        bool,
        typer.Option(
            "--power-cycle/--no-power-cycle",
            help="at the end of a shutdown for this UPS, have it cut and restore its load"
            " (INSTCMD shutdown.return; the user needs instcmds)",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a UPS: a device name on a NUT server (port 3493 unless given)."""
    ups_name, host, port = service.parse_device(device)
    data = UpsCreate(
        name=name,
        ups_name=ups_name,
        host=host or "127.0.0.1",
        port=port or 3493,
        username=username,
        password=SecretStr(password) if password is not None else None,
        description=description,
        power_cycle=power_cycle,
    )
    with open_session() as session:
        ups = service.create_ups(session, get_settings(), data)
        emit(UpsPublic.of(ups), UPS_COLUMNS, as_json=as_json)


@ups_app.command("power-cycle")
def ups_power_cycle(
    ups_id: int,
    enable: Annotated[
        bool, typer.Option("--enable/--disable", help="power-cycle the load at the end of a shutdown")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Have the UPS cut and restore its load once every node a shutdown for it powered off is down."""
    with open_session() as session:
        ups = service.set_power_cycle(session, ups_id, enable)
        emit(UpsPublic.of(ups), UPS_COLUMNS, as_json=as_json)


@ups_app.command("outages")
def ups_outages(
    cluster_id: Annotated[int | None, typer.Option("--cluster-id", help="only this cluster's")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="only outages not closed yet")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="how many, newest first")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Clusters powered down because of a UPS: which nodes were up, which mko powered off, how it ended."""
    with open_session() as session:
        found = [
            OutagePublic.model_validate(outages.outage_doc(session, o))
            for o in outages.list_outages(session, cluster_id=cluster_id, open_only=open_only, limit=limit)
        ]
        emit(found, OUTAGE_COLUMNS, as_json=as_json, title="Outages")


@ups_app.command("list")
def ups_list(as_json: JsonOpt = False) -> None:
    """List UPSes."""
    with open_session() as session:
        emit(
            [UpsPublic.of(u) for u in service.list_ups(session)], UPS_COLUMNS, as_json=as_json, title="UPSes"
        )


@ups_app.command("show")
def ups_show(ups_id: int, as_json: JsonOpt = False) -> None:
    """Show one UPS and its rules."""
    with open_session() as session:
        ups = service.get_ups(session, ups_id)
        emit(UpsPublic.of(ups), UPS_COLUMNS, as_json=as_json)
        found = [RulePublic.model_validate(r) for r in rules_service.list_rules(session, ups_id=ups_id)]
        if not as_json and found:
            emit(found, RULE_COLUMNS[:10], as_json=False, title="Rules")


@ups_app.command("remove")
def ups_remove(
    ups_id: int,
    force: Annotated[bool, typer.Option("--force", help="also delete the rules that use it")] = False,
) -> None:
    """Remove a UPS and its event log (refused while rules use it, unless --force)."""
    with open_session() as session:
        service.delete_ups(session, ups_id, force=force)
    console.print(f"UPS {ups_id} removed")


@ups_app.command("status")
def ups_status(ups_id: int, as_json: JsonOpt = False) -> None:
    """Read a UPS now: status in words, charge, runtime, load, input voltage, reachability."""
    settings = get_settings()
    with open_session() as session:
        ups = service.get_ups(session, ups_id)
        box = SecretBox.from_settings(settings) if ups.password_encrypted else None
        target = service.target_of(ups, box)
    status = asyncio.run(service.read_status(target, settings.ups_timeout))
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    table = Table(title=f"UPS {target.id} ({target.name}) — {status['device']}", show_header=False, box=None)
    reachable = "yes" if status["reachable"] else f"NO — {status['error']}"
    table.add_row("[bold]reachable[/bold]", reachable)
    if status["status"] is not None:
        words = ", ".join(status["status_words"]) or "—"
        table.add_row("[bold]status[/bold]", f"{words}  ({status['status']})")
        table.add_row("[bold]battery charge[/bold]", _unit(status["battery_charge"], "%"))
        table.add_row("[bold]battery runtime[/bold]", _duration(status["battery_runtime"]))
        table.add_row("[bold]load[/bold]", _unit(status["ups_load"], "%"))
        table.add_row("[bold]input voltage[/bold]", _unit(status["input_voltage"], "V"))
        table.add_row("[bold]last update[/bold]", str(status["last_update"]))
    console.print(table)


def _unit(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:g} {unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


@ups_app.command("events")
def ups_events(
    ups_id: Annotated[int | None, typer.Option("--ups-id", help="only this UPS")] = None,
    event: Annotated[PowerEvent | None, typer.Option("--event", help="only this kind")] = None,
    since: Annotated[datetime | None, typer.Option("--since", help="only from this time (ISO 8601)")] = None,
    limit: Annotated[int, typer.Option("--limit", help="how many, newest first")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show stored power events, newest first."""
    with open_session() as session:
        found = service.list_events(session, ups_id=ups_id, event=event, since=since, limit=limit)
        rows = [UpsEventPublic.model_validate(e) for e in found]
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    table = Table(title="UPS events")
    for column in ("id", "time", "ups", "event", "status", "charge", "message"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.occurred_at.isoformat(timespec="seconds"),
            str(row.ups_id),
            row.event.value,
            f"{row.status_before or '?'} → {row.status_after or '?'}",
            _unit(row.battery_charge, "%"),
            row.message,
        )
    console.print(table)


@ups_app.command("monitor")
def ups_monitor() -> None:
    """Watch every UPS and run the power rules in the foreground (what `mko serve` does inside)."""
    settings = get_settings()
    if is_postgresql(settings.database_url):
        # Several instances may share a PostgreSQL database: only the elected `mko serve` may run rules.
        raise fail(
            "with PostgreSQL the UPS monitor runs in the elected `mko serve` leader only"
            " (see docs/high-availability.md); `mko cluster-status` shows which instance leads"
        )
    with open_wiring() as wiring:  # creates or checks the database schema first
        configure_logging(settings)
        monitor, _rules = wiring.ups_monitor()

        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            await monitor.start()
            console.print(
                f"monitoring {len(monitor.watched())} UPS(es) every {settings.ups_poll_interval:g}s;"
                " events and rule actions are logged below; Ctrl-C stops"
            )
            try:
                await asyncio.Event().wait()
            finally:
                await monitor.stop()

        try:
            asyncio.run(run())
        except (KeyboardInterrupt, asyncio.CancelledError):
            console.print("monitor stopped")


# ------------------------------------------------------------------------------------ rules


@ups_app.command("create-rule")
def create_rule(
    ups_id: Annotated[int, typer.Option("--ups-id", help="the UPS whose event triggers the rule")],
    cluster_id: Annotated[int, typer.Option("--cluster-id", help="the cluster acted on")],
    power_event: Annotated[PowerEvent, typer.Option("--power-event", help="the triggering event")],
    cluster_action: Annotated[ClusterAction, typer.Option("--cluster-action", help="what to do")],
    name: Annotated[str | None, typer.Option("--name", help="a name for people")] = None,
    battery_threshold: Annotated[
        int | None, typer.Option("--battery-threshold", help="low_battery: fire below this charge (%)")
    ] = None,
    delay: Annotated[
        int, typer.Option("--delay", help="seconds to wait before acting; the opposite event cancels")
    ] = 0,
    priority: Annotated[int, typer.Option("--priority", help="lower runs first")] = 100,
    disable: Annotated[bool, typer.Option("--disable", help="create it disabled")] = False,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover/--no-recover",
            help="wake_on_lan: then microk8s start everywhere, wait until every node is Ready, uncordon",
        ),
    ] = True,
    min_charge: Annotated[
        int | None,
        typer.Option(
            "--min-charge",
            help="power_restored: act once the battery charge is at least PCT %",
            metavar="PCT",
        ),
    ] = None,
    stable_for: Annotated[
        int | None,
        typer.Option(
            "--stable-for",
            help="power_restored: act once mains has held SECONDS [default: 10 for power_restored]",
            metavar="SECONDS",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a power rule: when POWER_EVENT happens on the UPS, do CLUSTER_ACTION to the cluster."""
    data = RuleCreate(
        ups_id=ups_id,
        cluster_id=cluster_id,
        power_event=power_event,
        cluster_action=cluster_action,
        name=name,
        battery_threshold=battery_threshold,
        action_delay=delay,
        priority=priority,
        enabled=not disable,
        recover_after_wake=recover,
        min_charge=min_charge,
        stable_for=stable_for,
    )
    with open_session() as session:
        rule = rules_service.create_rule(session, data)
        emit(RulePublic.model_validate(rule), RULE_COLUMNS, as_json=as_json)


@ups_app.command("list-rules")
def list_rules(
    ups_id: Annotated[int | None, typer.Option("--ups-id", help="only this UPS's rules")] = None,
    cluster_id: Annotated[int | None, typer.Option("--cluster-id", help="only this cluster's")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List power rules with their counters."""
    with open_session() as session:
        found = [
            RulePublic.model_validate(r)
            for r in rules_service.list_rules(session, ups_id=ups_id, cluster_id=cluster_id)
        ]
        emit(found, RULE_COLUMNS, as_json=as_json, title="Power rules")


@ups_app.command("delete-rule")
def delete_rule(rule_id: int) -> None:
    """Delete a power rule."""
    with open_session() as session:
        rules_service.delete_rule(session, rule_id)
    console.print(f"rule {rule_id} deleted")


def _set_enabled(rule_id: int, enabled: bool, as_json: bool) -> None:
    with open_session() as session:
        rule = set_rule_enabled(session, rule_id, enabled)
        emit(RulePublic.model_validate(rule), RULE_COLUMNS, as_json=as_json)


@ups_app.command("enable-rule")
def enable_rule(rule_id: int, as_json: JsonOpt = False) -> None:
    """Enable a power rule."""
    _set_enabled(rule_id, True, as_json)


@ups_app.command("disable-rule")
def disable_rule(rule_id: int, as_json: JsonOpt = False) -> None:
    """Disable a power rule (a waiting execution of it will not fire)."""
    _set_enabled(rule_id, False, as_json)
