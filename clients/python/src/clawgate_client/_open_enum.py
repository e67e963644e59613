"""`OpenEnum`: the base of every generated enum (models.py), so that enum-like fields are open.

PROTOCOL.md ("Version 2 additions"): a client must accept enum values it does not know, since a
newer gateway may send new ones. A generated enum keeps its known values as members (compare
with them, match on them), and a value it does not know becomes a pseudo-member of the enum
instead of failing the validation of the whole model::

    models.Role("critic")            # <Role.critic: 'critic'>, not a ValueError
    models.Role("critic") == "critic"                # True (a `str` like the known members)
    models.Role("critic").value                      # 'critic'
    models.Role("critic").is_known                   # False; models.Role.user.is_known is True

Pydantic calls `_missing_` for a value that is not a member, so a model validates too.
"""

from __future__ import annotations

from enum import Enum


class OpenEnum(str, Enum):
    """A `str` enum that also accepts strings that are not among its members.

    An unknown string gives a pseudo-member: an instance of the enum whose `value` (and `name`)
    is that string; it is not added to the enum (iteration, `len` and `__members__` list the
    known members only). A value that is not a string is still rejected (`ValueError`).
    """

    @classmethod
    def _missing_(cls, value: object) -> OpenEnum | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        # The name is the value, so hashing (by name) agrees with `==` on the string.
        member._name_ = value
        member._value_ = value
        return member

    @property
    def is_known(self) -> bool:
        """Whether this is one of the enum's members (else a value of a newer gateway)."""
        return type(self)._value2member_map_.get(self._value_) is self
