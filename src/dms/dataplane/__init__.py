"""The data plane: the registry of model versions and every operation on them, transport-neutral."""

from dms.dataplane.dataplane import DataPlane

__all__ = ["DataPlane"]
