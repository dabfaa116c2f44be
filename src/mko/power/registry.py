"""The power-driver registry: one line per driver, mapping the stored ``power_method`` to its module.

A driver module is imported the first time its class or its settings are needed (the heavy clients,
pyghmi, proxmoxer, pysnmp, are imported inside the modules that use them). Everything that varies by
method elsewhere is read from here: which methods exist (``names``), which need a magic packet
(``with_capability(Capability.WAKE_ONLY)``), every driver setting (``all_params_fields``, from which the
API, the CLI and the web build their fields), and the drivers of one run (``lookup``).

A composite driver (``PowerDriver.delegates``: a Proxmox host powered on by WoL, IPMI, Redfish or a PDU
outlet) names the methods it may be powered through, never their modules: its node's settings model
(``params``) is composed here from its own and theirs, and the run's lookup is handed to it as its
``peers``, so no driver imports another.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from mko.platform.errors import MkoError
from mko.power.base import AttemptError, Capability, DriverLookup, NodeSnapshot, PowerDriver
from mko.power.params import DriverParams, ParamMeta

if TYPE_CHECKING:
    from mko.platform.settings import Settings

__all__ = ["DRIVERS", "PowerMethod", "Registry", "missing_driver_message"]


class Registry:
    """Driver name → driver class, imported on first use."""

    def __init__(self, *entries: tuple[str, str]) -> None:
        self._paths = dict(entries)
        self._models: dict[str, type[DriverParams]] = {}
        # Fixed with the entries, and read on every status and form: worked out once.
        self._capable: dict[Capability, frozenset[str]] = {}
        self._fields: dict[str, tuple[Any, ParamMeta]] | None = None

    def names(self) -> tuple[str, ...]:
        """Every method, in registration order (the first is the default)."""
        return tuple(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def driver(self, name: str) -> type[PowerDriver]:
        """The driver class of a method; KeyError when there is none."""
        return _load(self._paths[name])

    def get(self, name: str) -> type[PowerDriver] | None:
        """The driver class of a method, or None."""
        return self.driver(name) if name in self._paths else None

    def params(self, name: str) -> type[DriverParams]:
        """The settings model of a method's nodes: the driver's own, joined for a composite driver with
        the models of the methods it is powered through (their settings live on the same node)."""
        if name not in self._models:
            cls = self.driver(name)
            models = [cls.Params, *(self.driver(method).Params for method in cls.delegates)]
            # The most derived of related models only (RawWolParams is a WolParams), each once.
            bases = [m for m in dict.fromkeys(models) if m is cls.Params or not _covered(m, models)]
            self._models[name] = cls.Params if len(bases) == 1 else self._joined(cls, bases)
        return self._models[name]

    def _joined(self, cls: type[PowerDriver], bases: list[type[DriverParams]]) -> type[DriverParams]:
        """One model with every field of ``bases`` (the driver's own first, so its ``required`` and its
        checks rule) that knows the method the node is powered through (``DriverParams.delegate``), so
        what that method requires is required of the node too."""
        setting, methods = cls.delegate_setting, cls.delegates

        def delegate(params: DriverParams) -> tuple[str, DriverParams] | None:
            method = getattr(params, setting) if setting is not None else None
            if method not in methods:
                return None
            return method, self.params(method).model_validate(params.model_dump())

        # The driver's own ``needed``, not the first delegate's the bases would offer: each method's
        # needs are asked of its own model, the chosen delegate's through ``delegate``.
        namespace = {"__module__": cls.Params.__module__, "delegate": delegate, "needed": cls.Params.needed}
        joined: type[DriverParams] = type(cls.Params.__name__, tuple(bases), namespace)
        return joined

    def with_capability(self, capability: Capability) -> frozenset[str]:
        """The methods whose driver declares ``capability``."""
        if capability not in self._capable:
            capable = (name for name in self._paths if capability in self.driver(name).capabilities)
            self._capable[capability] = frozenset(capable)
        return self._capable[capability]

    def all_params_fields(self) -> Mapping[str, tuple[Any, ParamMeta]]:
        """Every driver setting by its flat name: (field info, meta), first declaration wins.

        A name means one thing everywhere (tests/unit/power/test_registry.py checks it), so the union is
        what the API, the CLI and the web forms offer.
        """
        if self._fields is None:
            fields: dict[str, tuple[Any, ParamMeta]] = {}
            for name in self._paths:
                params = self.params(name)
                metas = params.fields_meta()
                for field, info in params.model_fields.items():
                    fields.setdefault(field, (info, metas[field]))
            self._fields = fields
        return MappingProxyType(self._fields)

    def lookup(self, settings: Settings) -> DriverLookup:
        """Drivers for one run: one instance per driver class, shared by all its nodes."""
        shared: dict[type[PowerDriver], PowerDriver | AttemptError] = {}

        def lookup(node: NodeSnapshot) -> PowerDriver | AttemptError:
            cls = self.get(node.method)
            if cls is None:
                return missing_driver_message(node)
            if cls not in shared:
                try:
                    driver = _created(cls, settings)
                except MkoError as exc:  # e.g. an unreadable secret key: every node of this driver fails
                    shared[cls] = AttemptError(f"{cls.label} driver unavailable: {exc}", retryable=False)
                else:
                    driver.peers = lookup  # a composite driver's delegate is one of the run's drivers
                    shared[cls] = driver
            return shared[cls]

        return lookup


def _created(cls: type[PowerDriver], settings: Settings) -> PowerDriver:
    """A driver for one run, with the key that reveals stored secrets (read only when one is used)."""
    from mko.platform.secrets import SecretBox

    driver = cls.create(settings)
    box: list[SecretBox] = []

    def secrets() -> SecretBox:
        if not box:
            box.append(SecretBox.from_settings(settings))
        return box[0]

    driver.secrets = secrets
    return driver


def _covered(model: type[DriverParams], models: list[type[DriverParams]]) -> bool:
    """Whether another of ``models`` derives from ``model`` (and so brings its fields)."""
    return any(other is not model and issubclass(other, model) for other in models)


@cache
def _load(path: str) -> type[PowerDriver]:
    module, _, attribute = path.partition(":")
    driver: type[PowerDriver] = getattr(importlib.import_module(module), attribute)
    return driver


def missing_driver_message(node: NodeSnapshot) -> AttemptError:
    """The honest error for a node whose power method has no driver."""
    return AttemptError(f"{node.label}: no power driver for method {node.method!r}", retryable=False)


#: Every power driver. Adding one: its module under mko/power/drivers/ and one line here.
DRIVERS: Final = Registry(
    ("ethernet", "mko.power.drivers.wol:WolDriver"),
    ("ethernet-raw", "mko.power.drivers.wol:RawWolDriver"),
    ("proxmox", "mko.power.drivers.proxmox:ProxmoxDriver"),
    ("proxmox_host", "mko.power.drivers.proxmox_host:ProxmoxHostDriver"),
    ("ipmi", "mko.power.drivers.ipmi:IpmiDriver"),
    ("redfish", "mko.power.drivers.redfish:RedfishDriver"),
    ("command", "mko.power.drivers.command:CommandDriver"),
    ("shelly", "mko.power.drivers.shelly:ShellyDriver"),
    ("snmp_pdu", "mko.power.drivers.snmp_pdu:SnmpPduDriver"),
    ("tasmota", "mko.power.drivers.tasmota:TasmotaDriver"),
    ("webhook", "mko.power.drivers.webhook:WebhookDriver"),
)

#: The methods as an enum, for OpenAPI schemas and CLI choices (the seed's ``"wol_method": "ethernet"``).
PowerMethod = enum.StrEnum(  # type: ignore[misc]
    "PowerMethod", {name.upper().replace("-", "_"): name for name in DRIVERS.names()}
)
