"""Notifications through apprise (mail, ntfy, Gotify, Discord, Slack, webhooks, …).

Where they go: the global URLs of ``settings.notify_urls`` plus, for a power rule or a schedule, the
URLs stored (encrypted, they carry tokens) on that rule or schedule. What is sent:

* power rules, by their flags: ``notify_on_trigger`` when the rule fires, ``notify_on_completion`` when
  its execution ended without failing (succeeded, or cancelled: e.g. power came back during the delay),
  ``notify_on_failure`` when it failed or only partly succeeded;
* every UPS event (global URLs, unless ``notify_ups_events`` is off);
* schedules whose run failed, only partly succeeded, was not started or was missed.

Sending never blocks the action that caused it: each notification is delivered by a short-lived
background thread with a total timeout (``notify_timeout``); failures are logged, never raised. URLs are
never logged or shown in full (apprise's privacy form hides their secrets).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from mko.platform.errors import InputError
from mko.platform.secrets import SecretBox
from mko.platform.settings import Settings

__all__ = [
    "Delivery",
    "Message",
    "decrypt_urls",
    "encrypt_urls",
    "masked",
    "send",
    "send_test",
    "validate_urls",
]

log = logging.getLogger("mko.notify")

# Notifications are rare; this only stops a storm (a flapping UPS) from opening hundreds of sockets.
_SENDERS = threading.BoundedSemaphore(8)
_TYPES = ("info", "success", "warning", "failure")  # apprise's NotifyType values


def _apprise() -> ModuleType:
    """apprise, imported on first use: a `mko serve` that sends nothing does not carry it (~4 MiB)."""
    return importlib.import_module("apprise")


@dataclass(frozen=True)
class Message:
    """One notification: a title, and a body of ``name: value`` lines (event, cluster, outcome, …)."""

    title: str
    fields: dict[str, str]
    kind: str = "info"  # info, success, warning or failure

    @property
    def body(self) -> str:
        """The text sent: one ``name: value`` line per field, so people and scripts can both read it."""
        return "\n".join(f"{name}: {value}" for name, value in self.fields.items() if value != "")


@dataclass
class Delivery:
    """A notification on its way; ``wait()`` is for tests and `mko notify test`, actions never wait."""

    message: Message
    targets: int
    ok: bool | None = None
    failed: list[str] = field(default_factory=list)  # services (in privacy form) that did not accept it
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until sent or given up; True when it finished within ``timeout``."""
        return self._done.wait(timeout)


def validate_urls(urls: Iterable[str], field_name: str = "notify_urls") -> list[str]:
    """The URLs, stripped; InputError naming the field for one apprise does not understand."""
    checked = []
    for position, raw in enumerate(urls, start=1):
        url = raw.strip()
        if not url:
            continue
        if _apprise().Apprise.instantiate(url) is None:
            # The URL itself may hold a token: name its scheme and position only.
            scheme = url.split("://", 1)[0] if "://" in url else "?"
            raise InputError(
                field_name,
                f"URL {position} ({scheme}://…) is not a notification URL apprise supports;"
                " see https://github.com/caronc/apprise/wiki",
            )
        checked.append(url)
    return checked


def masked(url: str) -> str:
    """The URL with its secrets hidden, for showing and logging."""
    plugin = _apprise().Apprise.instantiate(url)
    if plugin is None:
        return url.split("://", 1)[0] + "://…"
    private = str(plugin.url(privacy=True)).split("?", 1)[0]
    scheme, _, rest = private.partition("://")
    # apprise hides passwords and tokens, but some services carry the secret elsewhere (an ntfy topic,
    # a webhook path): every word that is not a host name, an address or a short path is shortened too.
    parts = re.split(r"([/@])", rest)
    return f"{scheme}://" + "".join(p if p in "/@" or _shown(p) else f"{p[0]}…{p[-1]}" for p in parts)


def _shown(part: str) -> bool:
    return len(part) <= 6 or "." in part or ":" in part


def encrypt_urls(settings: Settings, urls: Sequence[str]) -> str | None:
    """The stored form of per-rule or per-schedule URLs (they carry tokens, so encrypted)."""
    if not urls:
        return None
    return SecretBox.from_settings(settings).encrypt(json.dumps(list(urls)))


def decrypt_urls(settings: Settings, stored: str | None) -> list[str]:
    """The URLs of :func:`encrypt_urls`; an unreadable value is logged and treated as none."""
    if not stored:
        return []
    try:
        urls = json.loads(SecretBox.from_settings(settings).decrypt(stored))
    except Exception as exc:  # a changed key must not stop the action that wanted to notify
        log.warning("stored notification URLs cannot be read: %s", exc)
        return []
    return [str(url) for url in urls]


def send(settings: Settings, message: Message, extra_urls: Sequence[str] = ()) -> Delivery | None:
    """Send ``message`` to the global URLs plus ``extra_urls`` in the background; None when there are none."""
    urls = list(dict.fromkeys([u.get_secret_value() for u in settings.notify_urls] + list(extra_urls)))
    if not urls:
        return None
    delivery = Delivery(message=message, targets=len(urls))
    thread = threading.Thread(
        target=_deliver,
        args=(urls, message, settings.notify_timeout, delivery),
        name="mko-notify",
        daemon=True,
    )
    thread.start()
    return delivery


def _deliver(urls: list[str], message: Message, timeout: float, delivery: Delivery) -> None:
    try:
        with _SENDERS:
            apprise = _apprise()
            sender = apprise.Apprise()
            for position, url in enumerate(urls, start=1):
                if not sender.add(url):
                    log.warning("notification URL %d (%s) is not valid; skipped", position, masked(url))
                    delivery.failed.append(masked(url))
            if len(sender) == 0:
                delivery.ok = False
                return
            result = sender.notify(
                body=message.body,
                title=message.title,
                notify_type=apprise.NotifyType(message.kind if message.kind in _TYPES else "info"),
                timeout=timeout,
            )
            for service in result:
                if not service:
                    delivery.failed.append(str(service.name))
            delivery.ok = bool(result) and not delivery.failed
            if delivery.ok:
                log.info("notification sent to %d service(s): %s", len(sender), message.title)
            else:
                log.warning(
                    "notification %r not delivered to: %s",
                    message.title,
                    ", ".join(delivery.failed) or "any service",
                )
    except Exception:
        delivery.ok = False
        log.exception("sending notification %r failed", message.title)
    finally:
        delivery._done.set()


def send_test(settings: Settings, urls: Sequence[str] = ()) -> Delivery | None:
    """A test notification to the global URLs and ``urls`` (checked first)."""
    extra = validate_urls(urls)
    return send(settings, Message("mko: test notification", {"event": "test", "outcome": "ok"}), extra)
