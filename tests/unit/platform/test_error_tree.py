"""The error tree is closed: every error class lives in mko.platform.errors, sits where its docstring
draws it, and each adapter answers it with its branch's HTTP status or exit code (never a 500 page,
never a traceback)."""

from __future__ import annotations

import ast
import importlib
import logging
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import mko
from mko.cli.root import MkoGroup
from mko.http.errors import install_error_handlers
from mko.lab.control import LabControl, LabPaths
from mko.platform import errors
from mko.platform.errors import (
    AuthenticationError,
    InputError,
    LabNotUpError,
    MkoError,
    UnavailableError,
)
from mko.platform.settings import Settings
from mko.web.errors import install_error_pages

SRC = Path(mko.__file__).parent
_ROW = re.compile(r"^(?P<indent>[\s│├└─]*)(?P<name>[A-Z]\w+)\b(?P<rest>.*)$")
_BRANCH = re.compile(r"^\s+(\d{3}) · exit (\d+)")
_OVERRIDE = re.compile(r"^\s+\((\d{3})\)")


def _all_modules() -> Iterator[str]:
    for info in pkgutil.walk_packages([str(SRC)], prefix="mko."):
        if ".nodeside" not in info.name and not info.name.endswith("__main__"):
            yield info.name


def _every_subclass(base: type[MkoError]) -> set[type[MkoError]]:
    found: set[type[MkoError]] = set()
    for sub in base.__subclasses__():
        found |= {sub, *_every_subclass(sub)}
    return found


def _drawing() -> dict[str, tuple[int, int, str | None]]:
    """Class name -> (HTTP status, exit code, parent in the drawing), read from the module docstring."""
    assert errors.__doc__
    rows: dict[str, tuple[int, int, str | None]] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name)
    for line in errors.__doc__.splitlines():
        match = _ROW.match(line)
        if not match or not (line.startswith("    ") and match["name"].endswith(("Error",))):
            continue
        column, name, rest = len(match["indent"]), match["name"], match["rest"]
        while stack and stack[-1][0] >= column:
            stack.pop()
        parent = stack[-1][1] if stack else None
        status, code = rows[parent][:2] if parent else (0, 0)
        if branch := _BRANCH.match(rest):
            status, code = int(branch[1]), int(branch[2])
        elif override := _OVERRIDE.match(rest):
            status = int(override[1])
        rows[name] = (status, code, parent)
        stack.append((column, name))
    return rows


def test_every_error_class_is_defined_in_the_tree_and_drawn_with_its_status_and_exit_code() -> None:
    for name in _all_modules():
        importlib.import_module(name)
    drawing = _drawing()
    classes = _every_subclass(MkoError) | {MkoError}
    assert {cls.__name__ for cls in classes} == set(drawing), "the docstring draws exactly the tree"
    for cls in classes:
        assert cls.__module__ == "mko.platform.errors", f"{cls.__name__} is defined outside the tree"
        status, code, parent = drawing[cls.__name__]
        assert (cls.http_status, cls.exit_code) == (status, code), cls.__name__
        if parent is not None:
            assert issubclass(cls, getattr(errors, parent)), f"{cls.__name__} is drawn under {parent}"
        if parent == "MkoError":  # a branch states its own numbers
            assert {"http_status", "exit_code"} <= set(vars(cls)), f"branch {cls.__name__} states both"
    assert MkoError.exit_code == 70 and UnavailableError.exit_code == 69 and InputError.exit_code == 2
    assert UnavailableError.http_status == 503


def test_no_exception_class_is_declared_outside_the_tree() -> None:
    """Only private control-flow exceptions (a leading underscore) may live beside the code raising them."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "errors.py" and path.parent.name == "platform":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = [ast.unparse(base) for base in node.bases]
            if any(base.endswith(("Error", "Exception")) for base in bases):
                offenders.append(f"{path.relative_to(SRC)}: class {node.name}({', '.join(bases)})")
    assert offenders == []


class _Target:
    label, address, node_id = "node n1", "192.0.2.1", 7


class _Result:
    command, exit_status, stdout, stderr = "systemctl poweroff", 1, "", "refused"


_SSH_TARGET = _Target()
# How the code raising each class with its own arguments builds it; the rest take a message.
_BUILD: dict[str, Any] = {
    "InputError": lambda cls: cls("field", "is wrong"),
    "NotFoundError": lambda cls: cls("node", 42),
    "NutResponseError": lambda cls: cls("DATA-STALE", "GET VAR ups ups.status"),
    "HostKeyUnknownError": lambda cls: cls(_SSH_TARGET, None),
    "HostKeyChangedError": lambda cls: cls(_SSH_TARGET, ["ssh-ed25519 AAAA"], None),
    "SshCommandError": lambda cls: cls(_SSH_TARGET, _Result()),
    **{
        name: lambda cls: cls(_SSH_TARGET, "went wrong")
        for name in ("SshError", "SshUnreachableError", "SshTimeoutError", "SshAuthError")
    },
}


def _instance(cls: type[MkoError]) -> MkoError:
    """One instance of each class, built as the code raising it builds it."""
    build = _BUILD.get(cls.__name__, lambda cls: cls(f"{cls.__name__} happened"))
    error: MkoError = build(cls)
    return error


def _leaves() -> list[type[MkoError]]:
    return sorted(_every_subclass(MkoError) | {MkoError}, key=lambda cls: cls.__name__)


def _app_raising(*, pages: bool) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    if pages:
        install_error_pages(app)
    app.state.lab = None  # read by the pages' layout

    for cls in _leaves():

        def raise_it(cls: type[MkoError] = cls) -> None:
            raise _instance(cls)

        app.add_api_route(f"/api/raise/{cls.__name__}", raise_it)
        app.add_api_route(f"/raise/{cls.__name__}", raise_it)

    def bug() -> None:
        raise RuntimeError("secret-token-123 leaked into a message")

    app.add_api_route("/api/bug", bug)
    app.add_api_route("/bug", bug)
    return app


@pytest.mark.parametrize("pages", [False, True], ids=["api-only", "with-web-pages"])
def test_every_error_answers_json_with_its_branch_status_on_the_api(pages: bool) -> None:
    with TestClient(_app_raising(pages=pages), raise_server_exceptions=False) as client:
        for cls in _leaves():
            response = client.get(f"/api/raise/{cls.__name__}")
            assert response.status_code == cls.http_status, cls.__name__
            assert response.headers["content-type"] == "application/json", cls.__name__
            detail = response.json()["detail"]
            if issubclass(cls, InputError):
                assert detail == [{"loc": ["body", "field"], "msg": "is wrong", "type": "value_error"}]
            else:
                assert detail == str(_instance(cls)), cls.__name__
            assert "Traceback" not in response.text
            if issubclass(cls, UnavailableError):
                assert response.headers["retry-after"] == "5"
            if issubclass(cls, AuthenticationError):
                assert response.headers["www-authenticate"] == "Bearer"
        bug = client.get("/api/bug")
        assert bug.status_code == 500 and bug.headers["content-type"] == "application/json"
        assert re.fullmatch(
            r"internal error \(incident [0-9a-f]{12}\); see the server log", bug.json()["detail"]
        )
        assert "secret-token-123" not in bug.text and "Traceback" not in bug.text


def test_every_error_on_a_page_answers_html_and_a_bug_gets_an_incident_id(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("mko"), "propagate", True)  # to caplog
    with TestClient(_app_raising(pages=True), raise_server_exceptions=False) as client:
        for cls in _leaves():
            response = client.get(f"/raise/{cls.__name__}", follow_redirects=False)
            if issubclass(cls, AuthenticationError):
                assert response.status_code == 303
                assert response.headers["location"] == f"/login?next=/raise/{cls.__name__}"
                continue
            assert response.status_code == cls.http_status, cls.__name__
            assert response.headers["content-type"].startswith("text/html"), cls.__name__
            assert "Traceback" not in response.text
        bug = client.get("/bug")
        assert bug.status_code == 500 and bug.headers["content-type"].startswith("text/html")
        incident = re.search(r"incident ([0-9a-f]{12})", bug.text)
        assert incident and "secret-token-123" not in bug.text and "Traceback" not in bug.text
    # The log has what the page leaves out: the incident id beside the traceback.
    logged = [record for record in caplog.records if incident[1] in record.getMessage()]
    assert logged and logged[0].exc_info is not None


def _cli_raising() -> typer.Typer:
    app = typer.Typer(cls=MkoGroup, add_completion=False, pretty_exceptions_enable=False)

    @app.command("raise")
    def raise_(name: str) -> None:
        if name == "bug":
            raise RuntimeError("secret-token-123 leaked into a message")
        raise _instance(getattr(errors, name))

    @app.command()
    def other() -> None:  # two commands, so the group takes the command's name
        """Nothing."""

    return app


def test_every_error_exits_with_its_branch_code_and_one_stderr_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = logging.getLogger("mko")
    # As in a fresh process: nothing configured the log yet, so the CLI sets up settings.log_file itself.
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    runner, app = CliRunner(), _cli_raising()
    for cls in _leaves():
        result = runner.invoke(app, ["raise", cls.__name__])
        assert result.exit_code == cls.exit_code, cls.__name__
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), cls.__name__
    bug = runner.invoke(app, ["raise", "bug"])
    assert bug.exit_code == 70 and bug.stderr.count("\n") == 1
    assert "internal error (RuntimeError, incident" in bug.stderr and "secret-token-123" not in bug.stderr
    incident = re.search(r"incident ([0-9a-f]{12})", bug.stderr)
    assert incident
    for handler in logger.handlers:
        handler.close()
    log_text = settings.log_file.read_text()
    assert incident[1] in log_text and "Traceback" in log_text and "RuntimeError" in log_text


def test_the_lab_power_fail_endpoint_answers_503_when_no_lab_daemon_runs(
    settings: Settings, session: Any, admin_token: str, tmp_path: Path
) -> None:
    from mko.app import create_app

    app = create_app(settings, lab=LabControl(LabPaths.of(tmp_path / "no-lab")))
    headers = {"Authorization": f"Bearer {admin_token}"}
    with TestClient(app, headers=headers, raise_server_exceptions=False) as client:
        response = client.post("/api/lab/power-fail")
    app.state.engine.dispose()
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["detail"].startswith("no lab is up in ")
    assert isinstance(LabNotUpError("x"), UnavailableError)


def test_a_database_that_refuses_connections_is_unavailable_not_a_bug(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, cli: CliRunner
) -> None:
    from sqlalchemy import text

    from mko.cli.root import app
    from mko.platform.db.session import make_engine
    from mko.platform.errors import DatabaseUnavailableError
    from mko.platform.settings import get_settings

    closed = "postgresql+psycopg://mko:hunter2-secret@127.0.0.1:1/mko"  # nothing listens on port 1
    engine = make_engine(closed)
    with pytest.raises(DatabaseUnavailableError, match="Connection refused") as caught, engine.connect() as c:
        c.execute(text("select 1"))
    assert "hunter2" not in str(caught.value)
    engine.dispose()

    monkeypatch.setenv("MKO_DATABASE_URL", closed)
    get_settings.cache_clear()
    result = cli.invoke(app, ["node", "list"])
    assert result.exit_code == 69 and result.stderr.count("\n") == 1, result.stderr
    assert (
        result.stderr.startswith("error: the database does not answer: ") and "hunter2" not in result.stderr
    )
