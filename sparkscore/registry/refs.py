"""Model names, aliases and refs (``'churn'``, ``'churn/3'``, ``'churn@prod'``): parsed and validated.

Names become directory names in the registry and travel into SQL plans, so validation is strict:
ASCII only, a leading letter, at most 128 characters, ``fullmatch`` (a trailing newline is junk, not
a name).  A name can therefore never be ``..``, hold a path separator, or carry SQL text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sparkscore.errors import InvalidModelNameError

NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_.-]{0,127}"
_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
_RULE = "start with a letter, then up to 127 of A-Z a-z 0-9 _ . -"


@dataclass(frozen=True)
class ModelRef:
    """A parsed ref: the latest version (``version`` and ``alias`` None), a pinned version, or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


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
    """Parse ``'name'``, ``'name/3'`` or ``'name@alias'``; InvalidModelNameError on anything else."""
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
        return ModelRef(validate_name(name), alias=validate_name(alias, "alias"))
    try:
        return ModelRef(validate_name(name))
    except InvalidModelNameError:
        raise InvalidModelNameError(f"invalid model ref {_shown(ref)}: use 'name', 'name/3' or 'name@alias' "
                                    f"where a name and alias {_RULE}") from None


def _shown(value: object) -> str:
    """repr of user input, shortened so one bad ref cannot flood an error line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
