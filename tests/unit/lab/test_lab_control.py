"""The lab's pieces that need no namespaces: its spec, its settings, its battery, its refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mko.cli.root import app
from mko.lab.control import LabControl, LabPaths, lab_settings
from mko.lab.daemon import LabDaemon, LabSpec, charge_after
from mko.platform.errors import ConflictError, InputError, LabNotUpError
from mko.platform.settings import Settings


def test_a_battery_drains_over_its_runtime_and_recharges_four_times_slower() -> None:
    assert charge_after(100, 60, 600, on_battery=True) == pytest.approx(90)
    assert charge_after(5, 60, 600, on_battery=True) == 0  # never below empty
    assert charge_after(50, 60, 600, on_battery=False) == pytest.approx(52.5)
    assert charge_after(99.5, 60, 600, on_battery=False) == 100  # never above full
    assert charge_after(42, 600, 0, on_battery=True) == 42  # runtime 0: it never drains


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nodes": 0}, "nodes"),
        ({"nodes": 2, "control_planes": 3}, "control-planes"),
        ({"shutdown_delay": -1}, "shutdown-delay"),
        ({"port": 70000}, "port"),
        ({"prefix": "Bad-Prefix"}, "prefix"),
        ({"battery_runtime": -5}, "battery-runtime"),
        ({"orchestrator_on_ups": True, "serve": False}, "orchestrator-on-ups"),
        ({"ups_offdelay": 0}, "ups-offdelay"),
        ({"min_charge": 0}, "min-charge"),
    ],
)
def test_an_impossible_lab_is_refused_naming_the_option(change: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as refused:
        LabSpec(**change).check()  # type: ignore[arg-type]
    assert refused.value.field == field


def test_every_file_of_the_lab_orchestrator_stays_in_the_lab_directory(
    tmp_path: Path, settings: Settings
) -> None:
    paths = LabPaths.of(tmp_path / "lab")
    lab = lab_settings(paths, settings)
    assert lab.database_url == f"sqlite:///{paths.database}" != settings.database_url
    for path in (
        lab.log_file,
        lab.ssh_known_hosts,
        lab.secret_key_file,
        lab.ups_monitor_lock_file,
        lab.backup_dir,
        lab.ansible_inventory_path,
        lab.ssh_default_key,
    ):
        assert path is not None and path.is_relative_to(paths.directory), path
    assert lab.secret_key is None and lab.admin_password is None  # never the real install's secrets


def test_the_lab_orchestrator_never_shuts_this_machine_down_only_its_virtual_host(
    tmp_path: Path, settings: Settings
) -> None:
    paths = LabPaths.of(tmp_path / "lab")
    real = settings.model_copy(update={"host_ups": "lab-ups", "host_shutdown_command": ["/sbin/poweroff"]})
    lab = lab_settings(paths, real)
    assert (lab.host_ups, lab.host_shutdown_command) == (None, [])
    assert lab.powerdown_flag == paths.directory / "powerdown.flag"
    paths.directory.mkdir(parents=True)
    paths.state.write_text(json.dumps({"spec": {"orchestrator_on_ups": True}}))
    on_ups = lab_settings(paths, real)
    assert on_ups.host_ups == "lab-ups"
    assert on_ups.host_shutdown_command[-4:] == ["lab", "host-halt", "--dir", str(paths.directory)]


def test_talking_to_a_lab_that_is_not_up_says_so(tmp_path: Path) -> None:
    with pytest.raises(LabNotUpError, match="no lab is up"):
        LabControl(LabPaths.of(tmp_path)).status()


def test_the_daemon_refuses_unknown_commands_and_a_second_server(tmp_path: Path, settings: Settings) -> None:
    daemon = LabDaemon(LabPaths.of(tmp_path), LabSpec(), settings)
    with pytest.raises(InputError, match="unknown lab command"):
        daemon.handle({"command": "explode"})
    daemon.handle({"command": "register-server", "pid": 1, "url": "http://127.0.0.1:8470"})  # pid 1 is alive
    with pytest.raises(ConflictError, match=re.escape("already serves http://127.0.0.1:8470 (pid 1)")):
        daemon.handle({"command": "register-server", "pid": 999_999_999, "url": "http://127.0.0.1:1"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lab", "up", "--nodes", "0"], "error: nodes: must be between 1 and 40"),
        (["lab", "battery", "101"], "error: percent: must be between 0 and 100"),
        (["lab", "flap", "0"], "error: seconds: must be between 1 and 3600"),
    ],
)
def test_lab_commands_refuse_bad_input_with_one_line(
    cli: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli.invoke(app, [*args, "--dir", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip() == message


def test_lab_status_without_a_lab_exits_69_unavailable(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["lab", "status", "--dir", str(tmp_path)])
    assert result.exit_code == 69  # EX_UNAVAILABLE: not bad input, try again once the lab is up
    assert result.stderr.strip() == f"error: no lab is up in {tmp_path}: run `sudo mko lab up`"
