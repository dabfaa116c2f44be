"""Hostile input: the classic payloads, and the checks that a sink let none of them through."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mko.platform.logs import MESSAGE_MAX

# One record per line: "<date> <time>,<ms> LEVEL logger: message", or an indented traceback line.
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.-]+: ")
FORGED_RECORD = "2024-01-01 00:00:00,000 WARNING mko.access.users: admin logged in from 10.0.0.1"


@dataclass(frozen=True)
class Payload:
    """A hostile value, and what it is: text no field may hold (``refused``), text only secrets may hold
    (``template``), or text a free-text field such as a description may hold (inert in every sink)."""

    name: str
    value: str
    kind: str  # "refused", "template" or "inert"


def payloads(marker: Path) -> list[Payload]:
    """Every classic payload; those that could run a command would create ``marker``."""
    return [
        Payload("jinja-lookup", f"{{{{ lookup('pipe', 'touch {marker}') }}}}", "template"),
        Payload(
            "jinja-statement", f"{{% for x in lookup('pipe', 'touch {marker}') %}}x{{% endfor %}}", "template"
        ),
        Payload("jinja-comment", "{# hidden #}ok", "template"),
        Payload("newline", f"ok\n{FORGED_RECORD}", "refused"),
        Payload("carriage-return", f"ok\r{FORGED_RECORD}", "refused"),
        Payload("nul", "ok\x00tail", "refused"),
        Payload("ansi-escape", "\x1b[2J\x1b[31mred\x1b]0;title\x07", "refused"),
        Payload("line-separator", "ok\u2028next\u2029para\x85nel", "refused"),
        Payload("bidi-override", "invoice\u202etxt.exe", "refused"),
        Payload("lone-surrogate", "ok\ud800", "refused"),
        Payload("very-long", "A" * 100_000, "refused"),
        Payload("shell-subst", f"$(touch {marker})", "inert"),
        Payload("shell-semicolon", f"x;touch {marker}", "inert"),
        Payload("shell-backtick", f"`touch {marker}`", "inert"),
        Payload("path-traversal", "../../../../etc/passwd", "inert"),
        Payload("html-script", "<script>alert('mko')</script><img src=x onerror=alert(1)>", "inert"),
    ]


def check_log(path: Path) -> list[str]:
    """Every line of the log is one record or an indented traceback line: nothing forged, nothing raw."""
    lines = path.read_bytes().decode("utf-8").splitlines()
    for line in lines:
        assert LOG_RECORD.match(line) or line.startswith("    "), f"not a log record: {line[:200]!r}"
        assert line.isprintable(), f"unprintable character in {line[:200]!r}"
        assert len(line) < MESSAGE_MAX + 200, f"a log line of {len(line)} characters"
        assert not line.startswith(FORGED_RECORD), "a forged record"
    return lines
