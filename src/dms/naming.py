"""Validation of model names and versions before they reach a path, a URL or a log line."""

from __future__ import annotations

import re

from dms.errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_LEN = 128
LOGGED_LENGTH = 128
"""The most characters of a client's text (a request id, a model name) a log line carries."""


def validate_model_name(name: str) -> str:
    if len(name) > _MAX_LEN or not _NAME.match(name) or ".." in name:
        raise InputError(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-', "
            f"starting with a letter or digit (at most {_MAX_LEN} characters)"
        )
    return name


def validate_model_version(version: str) -> str:
    if len(version) > _MAX_LEN or not _NAME.match(version) or ".." in version:
        raise InputError(
            f"invalid model version {version!r}: use letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return version


def check_requested_name(name: str, what: str = "model name") -> None:
    """Refuse (400) a requested model name or version longer than any registered one can be."""
    if len(name) > _MAX_LEN:
        raise InputError(f"the {what} is {len(name)} characters long; at most {_MAX_LEN} are allowed")


def loggable(text: str) -> str:
    """A client's text as one log line may carry it: control characters escaped, cut to ``LOGGED_LENGTH``.

    A request id or model name holding a newline would otherwise start a forged line of the log."""
    if len(text) > LOGGED_LENGTH:
        text = text[:LOGGED_LENGTH] + "..."
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")
