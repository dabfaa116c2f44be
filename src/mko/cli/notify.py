"""`mko notify …` — test the notification URLs, set a power rule's notifications."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mko.cli.common import EXIT_POWER_FAILURE, console, emit, fail, open_session
from mko.notify import delivery as notify_delivery
from mko.notify.rule_settings import configure_rule, rule_notifications
from mko.platform.settings import get_settings

notify_app = typer.Typer(
    help="Notifications (apprise URLs): test them, set them on power rules.", no_args_is_help=True
)


@notify_app.command("test")
def send_test(
    url: Annotated[
        list[str] | None,
        typer.Option("--url", help="apprise URL to try besides MKO_NOTIFY_URLS (repeatable)"),
    ] = None,
) -> None:
    """Send a test notification and wait for the result."""
    settings = get_settings()
    delivery = notify_delivery.send_test(settings, url or [])
    if delivery is None:
        raise fail("no notification URL: set MKO_NOTIFY_URLS (a JSON list) or give --url")
    if not delivery.wait(settings.notify_timeout + 5) or not delivery.ok:
        raise fail(
            f"not delivered to {', '.join(delivery.failed) or 'any service'} (see logs/orchestrator.log)",
            EXIT_POWER_FAILURE,
        )
    console.print(f"delivered to {delivery.targets} service(s)")


@notify_app.command("rule")
def rule(
    rule_id: int,
    on_trigger: Annotated[
        bool | None, typer.Option("--on-trigger/--no-on-trigger", help="when the rule fires")
    ] = None,
    on_completion: Annotated[
        bool | None, typer.Option("--on-completion/--no-on-completion", help="when its action succeeded")
    ] = None,
    on_failure: Annotated[
        bool | None, typer.Option("--on-failure/--no-on-failure", help="when its action failed")
    ] = None,
    url: Annotated[
        list[str] | None, typer.Option("--url", help="apprise URL for this rule (repeatable; replaces)")
    ] = None,
    clear_urls: Annotated[bool, typer.Option("--clear-urls", help="remove the rule's own URLs")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Show a power rule's notification settings, or change the ones given."""
    settings = get_settings()
    urls = [] if clear_urls else url
    with open_session() as session:
        if on_trigger is None and on_completion is None and on_failure is None and urls is None:
            shown = rule_notifications(session, settings, rule_id)
        else:
            shown = configure_rule(
                session,
                settings,
                rule_id,
                on_trigger=on_trigger,
                on_completion=on_completion,
                on_failure=on_failure,
                urls=urls,
            )
    if as_json:
        typer.echo(json.dumps(shown.model_dump(mode="json"), indent=2))
        return
    emit(shown, (), as_json=False)
