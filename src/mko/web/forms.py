"""Turning HTML form posts into the service layer's models, and errors back into field messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import ValidationError
from starlette.datastructures import FormData

from mko.platform.errors import InputError

__all__ = ["FieldErrors", "FormDep", "blank_to_none", "field_errors"]

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
