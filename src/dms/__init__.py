"""Deep Model Server: serve model archives over HTTP with batching and supervised workers.

Handler authors import from here: ``InputError`` to answer 400, ``BaseHandler`` to build on
the built-in handler flow, and ``Context`` for type hints.
"""

from __future__ import annotations

__version__ = "0.1.0"

from dms.errors import DMSError, InputError

__all__ = ["DMSError", "InputError", "__version__"]
