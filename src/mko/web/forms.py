"""Turning HTML form posts into the service layer's models, and errors back into field messages."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import ValidationError
from starlette.datastructures import FormData

from mko.platform.errors import InputError

__all__ = [
    "FieldErrors",
    "FormDep",
    "blank_to_none",
    "driver_fields",
    "field_errors",
    "method_choices",
    "node_ids",
    "params_from_form",
]

FieldErrors = dict[str, str]


def blank_to_none(form: Mapping[str, Any], fields: list[str]) -> dict[str, Any]:
    """The named fields of a form, with empty strings as None (an emptied field clears the value)."""
    values = {}
    for name in fields:
        value = form.get(name)
        if isinstance(value, str):
            value = value.strip() or None
        values[name] = value
    return values


def field_errors(exc: InputError | ValidationError) -> FieldErrors:
    """Errors keyed by field name, for showing next to each field."""
    if isinstance(exc, InputError):
        return {exc.field: exc.message}
    errors: FieldErrors = {}
    for error in exc.errors():
        field = str(error["loc"][-1]) if error["loc"] else "form"
        errors.setdefault(field, error["msg"])
    return errors


async def read_form(request: Request) -> FormData:
    """The posted form, read on the event loop so that the handler itself can be a sync function
    (FastAPI runs those in a worker thread, where their database work belongs)."""
    return await request.form()


FormDep = Annotated[FormData, Depends(read_form)]


def _input_type(annotation: Any, secret: bool) -> str:
    if secret:
        return "password"
    text = str(annotation)
    if annotation is bool or text in ("bool", "bool | None"):
        return "checkbox"
    if annotation is int or "int" in text.split(" | "):
        return "number"
    return "text"


def _shown(value: Any) -> Any:
    """A list setting (an argument vector) as one line of words, as it is typed."""
    return shlex.join(value) if isinstance(value, list) else value


def driver_fields(values: Mapping[str, Any], secrets_set: Mapping[str, bool]) -> list[dict[str, Any]]:
    """Every driver setting the seed's fields do not cover, as form fields (generated from the drivers'
    models): name, label, input type, current value, whether a secret is set, and the methods using it
    (the page shows a field only for those)."""
    from mko.power.registry import DRIVERS

    methods: dict[str, list[str]] = {}
    for method in DRIVERS.names():
        for name in DRIVERS.params(method).model_fields:
            methods.setdefault(name, []).append(method)
    fields = []
    for name, (info, meta) in DRIVERS.all_params_fields().items():
        if meta.column:
            continue
        fields.append(
            {
                "name": name,
                "label": meta.help,
                "type": _input_type(info.annotation, meta.secret),
                "value": None if meta.secret else _shown(values.get(name, info.default)),
                "is_set": bool(secrets_set.get(name)),
                "secret": meta.secret,
                "methods": " ".join(methods.get(name, [])),
            }
        )
    return fields


def method_choices() -> list[dict[str, str]]:
    """Every power method as its driver describes it: name, label, the kind of node it powers (physical,
    virtual, any) and the short badge of a node's card."""
    from mko.power.registry import DRIVERS

    choices = []
    for name in DRIVERS.names():
        cls = DRIVERS.driver(name)
        choices.append(
            {"name": name, "label": cls.label, "kind": cls.node_kind, "badge": cls.badge or cls.label}
        )
    return choices


def node_ids(text: str, field: str) -> list[int]:
    """``3, 4`` (commas or spaces) as node ids; InputError naming ``field`` otherwise."""
    parts = text.replace(",", " ").split()
    if not all(part.isdigit() and len(part) <= 18 for part in parts):
        raise InputError(field, f"{text[:100]!r} is not a list of node ids such as 3, 4")
    return [int(part) for part in parts]


def params_from_form(form: FormData) -> dict[str, Any]:
    """The driver settings a form posted: a blank field clears its value, a blank secret keeps the stored
    one (its "clear_<name>" box removes it), a checkbox reads "on" (a hidden "off" marks it present)."""
    from mko.power.registry import DRIVERS

    values: dict[str, Any] = {}
    for name, (info, meta) in DRIVERS.all_params_fields().items():
        if meta.column or name not in form:
            continue
        if meta.secret:
            secret = str(form.get(name) or "").strip()
            if secret:
                values[name] = secret
            if form.get(f"clear_{name}") == "on":
                values[name] = None
        elif _input_type(info.annotation, secret=False) == "checkbox":
            values[name] = "on" in form.getlist(name)
        else:
            value = form.get(name)
            values[name] = value.strip() or None if isinstance(value, str) else value
    return values
