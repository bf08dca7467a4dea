"""Fixtures for the unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop that must end with no task left: a request left hanging would leave one."""
    loop = asyncio.new_event_loop()
    yield loop
    assert not asyncio.all_tasks(loop), "a request was left hanging"
    loop.close()
