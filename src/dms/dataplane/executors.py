"""Where a server's workers run: processes on this machine, or actors on a Ray cluster (``ray_address``)."""

from __future__ import annotations

from collections.abc import Callable

from dms.engine.workers import WorkersFactory, local_workers
from dms.settings import ServerSettings


def workers_for(settings: ServerSettings) -> tuple[WorkersFactory, Callable[[], None]]:
    """The ``WorkersFactory`` the settings ask for, and what to call once the server has stopped its workers.

    Ray is imported only here, and only with ``ray_address``; joining the cluster blocks (a second or so), before
    the server opens its ports. Raises ``DMSError`` when Ray is missing or the cluster cannot be joined.
    """
    if settings.ray_address is None:
        return local_workers, lambda: None
    try:
        from dms.engine.ray_cluster import RayCluster
        from dms.engine.ray_workers import ray_workers
    except ImportError as exc:
        from dms.errors import DMSError

        raise DMSError(
            f"ray_address needs Ray, which is not installed ({exc}): pip install 'deep-model-server[ray]'"
        ) from exc
    cluster = RayCluster(settings.ray_address)
    cluster.connect()
    return ray_workers(cluster, settings.max_archive_bytes), cluster.disconnect
