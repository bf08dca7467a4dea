"""Validation of model names and versions before they reach a path, a URL or a log line."""

from __future__ import annotations

import re

from dms.errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_LEN = 128


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
