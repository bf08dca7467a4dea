"""``ts.context``: the context handlers receive is DMS's own, which offers the same attributes."""

from dms.worker.context import Context, RequestProcessor

__all__ = ["Context", "RequestProcessor"]
