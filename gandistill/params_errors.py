"""Pydantic's validation errors as lines a user can act on: the key path in params.yaml (without
pydantic's validator and union-member tags), the problem, the value given, and for an unknown key
the closest known one."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel


def _model_for_path(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """Walk the schema along an error location to find the model that owns the last key."""
    model: Any = root
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def _is_schema_tag(part: Any) -> bool:
    """A location part pydantic adds for a validator or a union member ("constrained-float",
    "literal['auto']"), not a key of the params tree."""
    return isinstance(part, str) and (part.startswith(("function-", "constrained-")) or "[" in part
                                      or part in ("float", "int", "str", "bool"))


def describe_error(error: dict[str, Any], root: type[BaseModel]) -> str:
    """One line for one pydantic error: the key path in the params tree, what is wrong, what was given
    (an unknown key: the closest known one)."""
    loc = tuple(p for p in error["loc"] if not _is_schema_tag(p))
    path = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        model = _model_for_path(loc, root)
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
            if close:
                hint = f" — did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?"
            else:
                hint = f" (known keys: {', '.join(model.model_fields)})"
        return f"  {path}: unknown key{hint}"
    got = error.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"  {path}: {error['msg']}{got_text}"
