"""Model names, aliases and refs (``'churn'``, ``'churn/3'``, ``'churn@prod'``,
``'churn@prod#2026-11-01T00:00:00Z'``): parsed and validated.

Names become directory names in the registry and travel into SQL plans, so validation is strict:
ASCII only, a leading letter, at most 128 characters, ``fullmatch`` (a trailing newline is junk, not
a name).  A name can therefore never be ``..``, hold a path separator, or carry SQL text.

A time-pinned ref ``name@alias#TIMESTAMP`` means "the version ``alias`` pointed at at that instant"
(resolved through the alias history).  ``#`` can never be part of a name or an alias (both are
``[A-Za-z][A-Za-z0-9_.-]{0,127}``), and a timestamp holds no ``/`` or ``@``, so the three separators
split a ref unambiguously.  The timestamp is ISO-8601 with an explicit UTC offset (``Z`` or
``+HH:MM``): a zone-less time would mean different instants on different machines, so it is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sparkscore.errors import InvalidModelNameError

NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_.-]{0,127}"
_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
_RULE = "start with a letter, then up to 127 of A-Z a-z 0-9 _ . -"
#: date, 'T', time to the second with optional fraction, then Z or an explicit offset
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
                        r"(Z|[+-][0-9]{2}:[0-9]{2})")


@dataclass(frozen=True)
class ModelRef:
    """A parsed ref: the latest version (``version`` and ``alias`` None), a pinned version, or an alias.

    ``at`` (only with ``alias``) is the timestamp text of a time-pinned ref, kept as written so the
    ref prints back exactly; :attr:`at_time` is the instant it names.
    """

    name: str
    version: int | None = None
    alias: str | None = None
    at: str | None = None

    def __post_init__(self) -> None:
        if self.at is not None:
            if self.alias is None:
                raise InvalidModelNameError(f"model ref {self.name!r}: a time pin '#{self.at}' needs an alias, "
                                            f"e.g. '{self.name}@prod#{self.at}'")
            parse_timestamp(self.at, f"{self.name}@{self.alias}")

    @property
    def at_time(self) -> datetime | None:
        """The instant of a time-pinned ref (timezone-aware), None otherwise."""
        return None if self.at is None else parse_timestamp(self.at, f"{self.name}@{self.alias}")

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}" + (f"#{self.at}" if self.at is not None else "")
        return self.name


def parse_timestamp(text: object, what: str) -> datetime:
    """The timezone-aware instant of an ISO-8601 ``text`` with ``Z`` or an offset; InvalidModelNameError otherwise."""
    if isinstance(text, str) and _TIMESTAMP.fullmatch(text):
        try:
            return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:  # 2026-02-30 and friends
            pass
    raise InvalidModelNameError(f"invalid time pin {_shown(text)} in {what}: use ISO-8601 with a UTC offset, "
                                "e.g. '#2026-11-01T00:00:00Z'")


def validate_name(name: object, what: str = "model name") -> str:
    """Return ``name`` if it is a valid model name or alias; raise InvalidModelNameError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidModelNameError(f"invalid {what} {_shown(name)}: {_RULE}")
    return name


def validate_version(version: object, name: str) -> int:
    """Return ``version`` as a positive int; raise InvalidModelNameError otherwise."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidModelNameError(f"invalid version {_shown(version)} of model {name!r}: versions are integers 1, 2, 3, ...")
    return version


def parse_ref(ref: object) -> ModelRef:
    """Parse ``'name'``, ``'name/3'``, ``'name@alias'`` or ``'name@alias#TIME'``; InvalidModelNameError otherwise."""
    if not isinstance(ref, str):
        raise InvalidModelNameError(f"model ref must be a string like 'churn', 'churn/3' or 'churn@prod', got {_shown(ref)}")
    name, sep_version, version = ref.partition("/")
    if sep_version:
        if not _VERSION.fullmatch(version):
            raise InvalidModelNameError(f"invalid model ref {_shown(ref)}: the part after '/' must be a version number "
                                        "like 'churn/3'")
        return ModelRef(validate_name(name), version=int(version))
    name, sep_alias, alias = ref.partition("@")
    if sep_alias:
        alias, sep_at, at = alias.partition("#")
        return ModelRef(validate_name(name), alias=validate_name(alias, "alias"), at=at if sep_at else None)
    try:
        return ModelRef(validate_name(name))
    except InvalidModelNameError:
        raise InvalidModelNameError(f"invalid model ref {_shown(ref)}: use 'name', 'name/3' or 'name@alias' "
                                    f"where a name and alias {_RULE}") from None


def _shown(value: object) -> str:
    """repr of user input, shortened so one bad ref cannot flood an error line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
