"""The one Settings object: environment (prefix ``MKO_``), an optional TOML file, then defaults."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Settings", "beside_database", "get_settings"]

DEFAULT_CONFIG_FILE = "mko.toml"


class Settings(BaseSettings):
    """Everything mko can be configured with; read by ``get_settings()``."""

    model_config = SettingsConfigDict(env_prefix="MKO_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///data/orchestrator.db",
        description="SQLAlchemy URL; sqlite:///relative/path or postgresql+psycopg://user:pw@host/db",
    )
    host: str = Field(default="127.0.0.1", description="address `mko serve` listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="port `mko serve` listens on")
    worker_threads: int = Field(
        default=40,
        ge=4,
        le=1000,
        description="threads `mko serve` runs database work in; the connection pool keeps one per thread",
    )
    max_request_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=1_073_741_824,
        description="largest request body `mko serve` accepts (JSON and forms); larger ones get 413",
    )
    log_dir: Path = Field(default=Path("logs"), description="directory of orchestrator.log")
    log_level: str = Field(default="INFO")
    log_max_bytes: int = Field(default=5_000_000, description="rotate orchestrator.log at this size")
    log_backups: int = Field(default=5)

    wol_default_retries: int = Field(default=3, ge=1, le=100, description="magic packets per wake")
    wol_default_delay: float = Field(default=1.0, ge=0.0, le=60.0, description="seconds between re-sends")
    wol_default_timeout: float = Field(default=300.0, gt=0, description="seconds --wait waits for a node")
    wol_default_interface: str | None = Field(
        default=None, description="source interface for magic packets when a node names none"
    )
    api_sync_wait: float = Field(
        default=10.0,
        ge=0,
        description="an API wake taking longer answers 202 and continues in the background",
    )
    probe_interval: float = Field(default=1.0, gt=0, description="seconds between reachability probes")
    probe_timeout: float = Field(default=1.0, gt=0, description="TCP connect timeout of one probe")
    live_read_interval: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="an operator's ?refresh=true reads a node or UPS at most this often; callers in"
        " between get that reading and its age",
    )

    ups_monitor_enabled: bool = Field(
        default=True, description="`mko serve` watches the UPSes and runs rules"
    )
    ups_poll_interval: float = Field(
        default=1.0, ge=0.05, le=60, description="seconds between two reads of each UPS's variables"
    )
    ups_timeout: float = Field(default=3.0, gt=0, le=60, description="timeout of one NUT request")
    ups_comm_lost_after: int = Field(
        default=2, ge=1, le=100, description="failed reads in a row before comm_lost is declared"
    )
    ups_reconnect_max: float = Field(
        default=10.0, gt=0, le=600, description="longest pause between reconnection attempts (backoff cap)"
    )
    ups_reload_interval: float = Field(
        default=5.0, gt=0, le=600, description="seconds between re-reads of the UPS list and rule thresholds"
    )
    ups_monitor_lock_file: Path | None = Field(
        default=None,
        description="lock that keeps a second monitor from running rules twice; default: named for the"
        " database, <file>.ups-monitor.lock beside SQLite (data/ups-monitor-<digest>.lock for others)",
    )
    rule_wake_timeout: float = Field(
        default=600.0, gt=0, le=3600, description="seconds a rule's wake waits for every node to answer"
    )
    # Outages (mko.ups.outages, docs/ups.md "mko on the same UPS").
    runtime_low_factor: float = Field(
        default=1.5,
        ge=1,
        le=10,
        description="runtime_low fires when battery.runtime < last shutdown duration × this + the margin",
    )
    runtime_low_margin: float = Field(
        default=60.0, ge=0, le=3600, description="seconds added to the needed runtime (runtime_low)"
    )
    runtime_low_unmeasured: float = Field(
        default=300.0,
        gt=0,
        le=7200,
        description="shutdown duration assumed for a cluster mko has not shut down yet (runtime_low)",
    )
    host_ups: str | None = Field(
        default=None,
        max_length=100,
        description="mko's name of the UPS that feeds mko's own host (its shutdown ends with this host's)",
    )
    host_shutdown_command: list[str] = Field(
        default=[],
        max_length=32,
        description="argument vector run as the very last step of a shutdown for MKO_HOST_UPS, as JSON,"
        ' e.g. ["/sbin/shutdown", "-h", "+0"] (never through a shell); empty: the host stays up',
    )
    powerdown_flag: Path | None = Field(
        default=None,
        description="marker written before the host shutdown command (like upsmon's POWERDOWNFLAG);"
        " default: powerdown.flag beside the SQLite database (data/powerdown.flag otherwise)",
    )
    backup_dir: Path | None = Field(
        default=None,
        description="where backups taken before schema changes go; default: beside the SQLite file"
        " (data/backups for PostgreSQL)",
    )

    secret_key_file: Path | None = Field(
        default=None,
        description="Fernet key encrypting stored secrets, created 0600 on first use; default:"
        " secret.key beside the SQLite database (data/secret.key for other databases)",
    )
    secret_key: SecretStr | None = Field(
        default=None, description="the Fernet key itself (urlsafe base64), instead of a key file"
    )
    power_api_timeout: float = Field(
        default=10.0, gt=0, le=300, description="timeout of one Proxmox, IPMI or Redfish request"
    )
    power_device_gap: float = Field(
        default=1.0,
        ge=0,
        le=600,
        description="seconds between two power-ons on one device (a PDU or plug) during a wake",
    )
    power_timeout: float = Field(
        default=120.0, gt=0, le=3600, description="seconds `node power` waits for the requested state"
    )
    proxmox_task_timeout: float = Field(
        default=120.0, gt=0, le=3600, description="seconds to wait for a Proxmox start/stop task"
    )
    proxmox_shutdown_timeout: int = Field(
        default=120, ge=1, le=3600, description="seconds a VM gets to shut down (ACPI) before it is stopped"
    )

    ssh_known_hosts: Path = Field(
        default=Path("data/known_hosts"),
        description="host keys mko trusts (OpenSSH format; `mko node trust` adds to it, Ansible reads it)",
    )
    ssh_default_key: Path | None = Field(
        default=None, description="private key for nodes without ssh_key_path (else ~/.ssh/id_* and agent)"
    )
    ssh_connect_timeout: float = Field(default=10.0, gt=0, le=300, description="SSH connect + login timeout")
    ssh_command_timeout: float = Field(default=60.0, gt=0, le=3600, description="timeout of one SSH command")
    ssh_parallel: int = Field(default=32, ge=1, le=1024, description="SSH sessions open at once")
    ansible_inventory_path: Path = Field(
        default=Path("ansible/inventory/dynamic_inventory.ini"),
        description="where `mko ansible inventory` writes the inventory (kept current once it exists)",
    )
    ansible_facts_dir: Path = Field(
        default=Path("ansible/facts"), description="where the playbooks leave the facts mko imports"
    )

    # Schedules, discovery, monitoring, notifications (issue 11).
    scheduler_enabled: bool = Field(default=True, description="`mko serve` runs the schedules")
    schedule_default_timezone: str = Field(
        default="UTC", description="IANA time zone of schedules created without one, e.g. Europe/Berlin"
    )
    schedule_misfire_grace: float = Field(
        default=60.0,
        ge=0,
        le=86400,
        description="a run found up to this many seconds late still runs; older ones are reported missed",
    )
    schedule_poll_max: float = Field(
        default=15.0, gt=0, le=3600, description="longest sleep of the scheduler (picks up CLI changes)"
    )
    reachability_interval: float = Field(
        default=30.0,
        ge=0,
        description="seconds between background probes of every node (0: no background probing)",
    )
    discovery_ports: list[int] = Field(
        default=[22, 16443], description="TCP ports `mko discover` probes when none are given"
    )
    discovery_max_prefix: int = Field(
        default=22, ge=0, le=32, description="`mko discover` refuses ranges larger than a /N unless forced"
    )
    discovery_timeout: float = Field(default=1.0, gt=0, le=30, description="timeout of one discovery probe")
    discovery_concurrency: int = Field(default=512, ge=1, le=4096, description="discovery probes at once")
    notify_urls: list[SecretStr] = Field(
        default=[],
        description="apprise URLs every notification goes to (json://, ntfy://, mailto://, …); as JSON list",
    )
    notify_timeout: float = Field(
        default=10.0, gt=0, le=300, description="seconds one notification may take before it is given up"
    )
    notify_ups_events: bool = Field(default=True, description="notify the global URLs of every UPS event")

    drain_timeout: float = Field(default=120.0, gt=0, le=3600, description="kubectl drain --timeout per node")
    microk8s_stop_timeout: float = Field(default=180.0, gt=0, le=3600, description="`microk8s stop` per node")
    microk8s_start_timeout: float = Field(
        default=300.0, gt=0, le=3600, description="`microk8s start` per node"
    )
    poweroff_timeout: float = Field(default=180.0, gt=0, le=3600, description="until a node stops answering")
    dqlite_backup_dir: Path | None = Field(
        default=None,
        description="where datastore backups taken before a cluster shutdown go (one 0700 directory per"
        " cluster); default: dqlite-backups beside the SQLite database (data/dqlite-backups otherwise)",
    )
    recovery_timeout: float = Field(
        default=900.0, gt=0, le=7200, description="recovery: until every node is started, Ready, uncordoned"
    )
    preflight_timeout: float = Field(
        default=60.0, gt=0, le=3600, description="`mko cluster check`: seconds for all checks of a node"
    )
    preflight_shutdown_wait: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="seconds a shutdown for power or on a schedule waits for its preflight before it goes on",
    )

    admin_password: SecretStr | None = Field(
        default=None, description="password of the first admin; generated and printed once when unset"
    )
    session_minutes: int = Field(default=480, ge=1, le=60 * 24 * 30, description="web session lifetime")
    # argon2id cost of new password hashes (argon2-cffi's defaults, RFC 9106's low-memory profile). A hash
    # records its own parameters: changing these re-hashes each password at its owner's next login.
    password_hash_time_cost: int = Field(
        default=3, ge=1, le=20, description="argon2 passes over the memory for each password hash"
    )
    password_hash_memory_cost: int = Field(
        default=65_536, ge=8, le=1_048_576, description="argon2 memory per password hash, in KiB (64 MiB)"
    )
    password_hash_parallelism: int = Field(
        default=4, ge=1, le=64, description="argon2 lanes (threads) per password hash"
    )
    login_attempts: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="failed logins per client address (and per known browser) within login_window",
    )
    login_window: float = Field(default=300.0, gt=0, description="seconds over which failed logins count")
    login_free_failures: int = Field(
        default=3, ge=0, le=100, description="failed logins of one account before its backoff starts"
    )
    login_backoff_max: float = Field(
        default=300.0, gt=0, le=86400, description="longest wait of an account's backoff (1, 2, 4 … s)"
    )
    auth_events_keep_days: float = Field(
        default=90.0, gt=0, le=36500, description="failed logins and denials are kept this many days"
    )
    auth_events_keep_max: int = Field(
        default=100_000, ge=100, le=100_000_000, description="and at most this many (the newest)"
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="reverse proxies whose X-Forwarded-For/-Proto are believed (addresses or networks,"
        " comma-separated); none by default",
    )
    lab_dir: Path = Field(
        default=Path("data/lab"), description="directory of the virtual lab of `mko lab up` (own database)"
    )
    netns: str | None = Field(
        default=None,
        description='network namespace the CLI works in (the lab\'s, set by `eval "$(mko lab env)"`): its'
        " magic packets, SSH and UPS reads stay inside it; needs root",
    )
    wake_coalesce_seconds: float = Field(
        default=10.0, ge=0, le=3600, description="a wake of a node this soon after the last joins that one"
    )

    # Wake agents (mko.agents, docs/wake-agents.md).
    agent_heartbeat_interval: float = Field(
        default=10.0, gt=0, le=300, description="seconds between an agent's heartbeats (told to agents)"
    )
    agent_offline_after: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="an agent silent this long is offline; a wake for a site with none fails at once",
    )
    agent_claim_wait: float = Field(
        default=20.0, ge=0, le=120, description="longest an agent's claim waits for a job (long poll)"
    )

    # Operation owners (mko.operations.ownership): open operations of a process that is gone are closed
    # as interrupted.
    operation_heartbeat_interval: float = Field(
        default=10.0, gt=0, le=300, description="seconds between heartbeats of a process's open operations"
    )
    operation_owner_timeout: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="an owner on another host silent this long is gone (one on this host: by its pid)",
    )

    # High availability (mko.ha): several `mko serve` on one PostgreSQL database, one of them the leader.
    instance_name: str | None = Field(
        default=None, max_length=200, description="name of this serve instance; default hostname:pid"
    )
    instance_url: str | None = Field(
        default=None, max_length=500, description="URL where this instance's API answers (shown in status)"
    )
    ha_failover_timeout: float = Field(
        default=6.0,
        ge=2,
        le=60,
        description="PostgreSQL drops a silent leader's session (and frees the lock) after about this long",
    )
    ha_check_interval: float = Field(
        default=1.0, gt=0, le=10, description="seconds between election checks (followers try the lock)"
    )
    ha_check_timeout: float = Field(
        default=1.0, gt=0, le=10, description="the leader fences itself when its check takes longer"
    )
    ha_heartbeat_interval: float = Field(default=1.0, gt=0, le=60, description="seconds between heartbeats")
    ha_dead_after: float = Field(
        default=5.0, gt=0, le=600, description="an instance silent this long (and without session) is dead"
    )

    @model_validator(mode="after")
    def _argon2_memory_fits_its_lanes(self) -> Settings:
        # argon2 itself refuses less than 8 KiB per lane; say so at start-up, not at the first login.
        if self.password_hash_memory_cost < 8 * self.password_hash_parallelism:
            raise ValueError(
                "password_hash_memory_cost must be at least 8 x password_hash_parallelism KiB"
                f" ({self.password_hash_memory_cost} < 8 x {self.password_hash_parallelism})"
            )
        return self

    @model_validator(mode="after")
    def _owner_timeout_spans_heartbeats(self) -> Settings:
        # A remote owner is judged by its heartbeats: the timeout must let a few of them be missed.
        if self.operation_owner_timeout < 3 * self.operation_heartbeat_interval:
            raise ValueError(
                "operation_owner_timeout must be at least 3 x operation_heartbeat_interval"
                f" ({self.operation_owner_timeout:g} < 3 x {self.operation_heartbeat_interval:g})"
            )
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: Any) -> list[str]:
        items = value.replace(",", " ").split() if isinstance(value, str) else list(value or [])
        proxies = []
        for item in items:
            try:
                proxies.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
                ) from None
        return proxies

    @field_validator("host_shutdown_command")
    @classmethod
    def _an_argument_vector(cls, argv: list[str]) -> list[str]:
        """The program by its absolute path (no PATH lookup), and no empty or NUL-bearing argument."""
        if argv and not os.path.isabs(argv[0]):
            raise ValueError(
                f"the program must be an absolute path, e.g. /usr/bin/systemctl (not {argv[0]!r})"
            )
        if any(not arg or "\0" in arg for arg in argv):
            raise ValueError("arguments must be non-empty and free of NUL characters")
        return argv

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: explicit arguments, environment, the TOML file named by MKO_CONFIG (or ./mko.toml)."""
        config_file = Path(os.environ.get("MKO_CONFIG", DEFAULT_CONFIG_FILE))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file),
        )

    @property
    def log_file(self) -> Path:
        """Path of the rotating orchestrator log."""
        return self.log_dir / "orchestrator.log"


def beside_database(database_url: str, name: str) -> Path:
    """Where a file of this install lives by default: beside the SQLite database, else in data/."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(str(url.database)).parent / name
    return Path("data") / name


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; tests build their own ``Settings(...)``."""
    return Settings()
