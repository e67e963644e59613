"""Turning Python values into JSON-RPC params (camelCase wire names, `UNSET` left out)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Final, final

from pydantic import BaseModel


@final
class Unset:
    """The type of `UNSET`: "this argument was not given", as opposed to an explicit `None`.

    A param left `UNSET` is not sent at all; `None` is sent as JSON `null` (which, for example,
    clears a session's label in `sessions.patch`).
    """

    _instance: Unset | None = None

    def __new__(cls) -> Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()


def to_wire(value: Any) -> Any:
    """A JSON-ready copy of `value`: models by alias (camelCase), enums by value."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return value


def wire_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params keyed by wire name, without the ones left `UNSET`."""
    return {name: to_wire(value) for name, value in params.items() if value is not UNSET}
