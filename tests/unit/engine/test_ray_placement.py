"""What a server says when a worker cannot be placed, and that Ray stays off the default path."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from dms.engine.supervision import Placement
from dms.settings import ServerSettings


def test_ray_is_never_imported_by_a_server_that_does_not_use_it():
    code = (
        "import sys, dms.server, dms.cli.main, dms.dataplane.executors as e; from dms.settings import ServerSettings;"
        "e.workers_for(ServerSettings()); print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_a_placement_names_only_what_it_asks_for_by_rays_names():
    placement = Placement(num_cpus=2, num_gpus=0, memory_bytes=2**30, resources=(("TPU", 4.0),))
    assert placement.demand() == {"CPU": 2, "memory": 2**30, "TPU": 4.0}


def test_a_worker_no_node_could_take_is_explained_and_one_some_node_could_is_not():
    pytest.importorskip("ray", reason="needs Ray: pip install 'deep-model-server[ray]'")
    from dms.engine.ray_cluster import unplaceable_reason

    nodes = [{"CPU": 0.0}, {"CPU": 4.0, "memory": 8 * 2**30}]
    assert unplaceable_reason({"CPU": 1.0}, nodes) is None
    reason = unplaceable_reason({"CPU": 1.0, "GPU": 1.0}, nodes)
    assert reason is not None and "(CPU 1, GPU 1)" in reason and "CPU 4, GPU 0" in reason
    assert "16384 MiB" in (unplaceable_reason({"memory": 16 * 2**30}, nodes) or "")


def test_ray_workers_come_with_one_frontend_per_machine():
    with pytest.raises(ValidationError, match="one DMS per machine"):
        ServerSettings(ray_address="127.0.0.1:6379", frontends=2, inference_address="127.0.0.1:8080")
