"""A driver's settings: a pydantic model whose fields carry what every adapter needs to know.

Each driver declares ``Params``, a :class:`DriverParams` subclass. Its fields are the node's power
settings for that method, named flat (``bmc_address``, ``webhook_on_url``), and each carries a
:class:`ParamMeta`: the help text, the CLI option, whether it is a secret (encrypted at rest, write-only
in every adapter, shown as ``<name>_set``), which fields a secret is bound to (changing them needs the
secret again), which nodes-table column holds it (the seed's WoL fields), and the check that normalises
a value a person typed (raising InputError that names the field).

From these the inventory stores and validates a node's ``power_params``, the API builds its request and
response models, the CLI its options and the web its forms: a new driver touches none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "DriverParams",
    "EncryptedSecret",
    "ParamMeta",
    "RevealedSecret",
    "StoredSecret",
    "column",
    "param",
    "secret",
]

Check = Callable[[Any, str], Any]


@dataclass(frozen=True)
class ParamMeta:
    """What the adapters and the inventory need to know about one driver setting."""

    help: str
    option: str | None = None  # CLI option; default "--" + name with dashes
    column: bool = False  # stored in the nodes-table column of the same name (the seed's WoL fields)
    secret: bool = False  # encrypted at rest, write-only, reported as "<name>_set"
    binds: tuple[str, ...] = ()  # changing one of these needs the secret again (or the admin role)
    check: Check | None = None  # normalises a typed value; raises InputError(field, …)
    ref: str | None = None  # the service resolves this id to an object for the driver

    def cli_option(self, name: str) -> str:
        """The option's spelling on the command line."""
        return self.option or "--" + name.replace("_", "-")


class EncryptedSecret(str):
    """A secret as stored: a Fernet token. Only a driver's ``reveal`` turns it into the secret."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class RevealedSecret(str):
    """A secret already in the clear (a wake agent receives its SecureOn passwords this way)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def _stored_secret(value: Any) -> Any:
    if value is None or isinstance(value, EncryptedSecret | RevealedSecret):
        return value
    if isinstance(value, dict) and isinstance(value.get("fernet"), str):
        return EncryptedSecret(value["fernet"])
    raise ValueError("a stored secret is {'fernet': '<token>'}")


#: The type of a secret field: as stored ({"fernet": token} in JSON), or revealed for a wake agent.
StoredSecret = Annotated[Any, BeforeValidator(_stored_secret)]


def stored_value(value: Any) -> Any:
    """A parameter value as JSON storage holds it (secrets as {"fernet": token})."""
    if isinstance(value, RevealedSecret):
        raise TypeError("a revealed secret is never stored")
    if isinstance(value, EncryptedSecret):
        return {"fernet": str(value)}
    return value


def param(default: Any = None, *, help: str, **meta: Any) -> Any:
    """A driver setting with its metadata."""
    info = Field(default, description=help)
    info.metadata.append(ParamMeta(help=help, **meta))
    return info


def secret(*, help: str, binds: tuple[str, ...] = (), **meta: Any) -> Any:
    """A secret setting: encrypted at rest, never shown."""
    return param(None, help=help, secret=True, binds=binds, **meta)


def column(default: Any = None, *, help: str, **meta: Any) -> Any:
    """A setting kept in the nodes-table column of the same name (the seed's WoL fields)."""
    return param(default, help=help, column=True, **meta)


def meta_of(model: type[BaseModel], name: str) -> ParamMeta:
    """The ParamMeta of one field (a field without one gets a plain help text)."""
    info = model.model_fields[name]
    for item in info.metadata:
        if isinstance(item, ParamMeta):
            return item
    return ParamMeta(help=info.description or name)


class DriverParams(BaseModel):
    """Base of every driver's settings model.

    Values come from storage (already checked) or from a person through the inventory service, which
    first runs each given field's ``check``. ``extra="ignore"``: a node's stored
    settings keep other drivers' values (switching back to IPMI keeps the BMC settings), and each
    driver reads only its own.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    #: Fields that must be set for the driver to work at all.
    required: ClassVar[tuple[str, ...]] = ()
    #: Fields that must be set before the node's power-on is enabled (``wol_enabled``).
    required_when_enabled: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def fields_meta(cls) -> dict[str, ParamMeta]:
        """Every field's metadata, in declaration order."""
        return {name: meta_of(cls, name) for name in cls.model_fields}

    @classmethod
    def secret_fields(cls) -> tuple[str, ...]:
        """The names of the secret fields."""
        return tuple(name for name, meta in cls.fields_meta().items() if meta.secret)

    def needed(self) -> tuple[str, ...]:
        """Fields that these values make necessary besides ``required`` (SNMP v3: its user)."""
        return ()

    def delegate(self) -> tuple[str, DriverParams] | None:
        """For a composite driver's node: the method it is powered through and its settings as that
        method's model (the registry's joined models answer); None otherwise, or while none is chosen."""
        return None

    def missing(self, *, enabled: bool) -> Iterator[str]:
        """Required fields without a value (with ``enabled``: also those a power-on needs), then those of
        the method a composite driver's node is powered through, as a node of that method would."""
        names = self.required + (self.required_when_enabled if enabled else ()) + self.needed()
        yield from dict.fromkeys(name for name in names if getattr(self, name) in (None, ""))
        chosen = self.delegate()
        if chosen is not None:
            yield from chosen[1].missing(enabled=enabled)
