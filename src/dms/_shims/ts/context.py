"""``ts.context``: the context handlers receive is DMS's own, which offers the same attributes."""

from dms.context import Context, RequestProcessor

__all__ = ["Context", "RequestProcessor"]
