"""``dms status`` and ``dms models``: tables read from a running server's management and metrics APIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from prometheus_client.parser import text_string_to_metric_families

from dms.auth import read_key
from dms.settings import load_settings


def _options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option("--management-address", help="host:port of the management API [from settings]."),
            click.option("--metrics-address", help="host:port of the metrics endpoint [from settings]."),
            click.option("--state-dir", type=click.Path(path_type=Path), help="Where the key file is [~/.dms]."),
            click.option("--token", help="The management key (default: read from the state folder's key file)."),
        ]
    ):
        fn = option(fn)
    return fn


class ServerView:
    def __init__(
        self, management_address: str | None, metrics_address: str | None, state_dir: Path | None, token: str | None
    ) -> None:
        settings = load_settings(state_dir=state_dir)
        self.management = f"http://{management_address or settings.management_address}"
        self.metrics = f"http://{metrics_address or settings.metrics_address}"
        if token is None and settings.key_file.exists():
            token = read_key(settings.key_file, "management")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str) -> Any:
        import httpx  # here, not at the top: `dms serve` shares this CLI and need not pay for the import

        try:
            response = httpx.get(f"{self.management}{path}", headers=self.headers, timeout=10)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the management API at {self.management}: {exc}") from None
        if response.status_code in (401, 403):
            raise click.ClickException(f"the management API refused the key ({response.json().get('message')})")
        response.raise_for_status()
        return response.json()

    def versions(self) -> list[dict[str, Any]]:
        names = [m["modelName"] for m in self.get("/models?limit=1000")["models"]]
        return [version for name in names for version in self.get(f"/models/{name}/all")]

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        import httpx

        try:
            text = httpx.get(f"{self.metrics}/metrics", timeout=10).text
        except httpx.HTTPError:
            return {}
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _workers(version: dict[str, Any]) -> str:
    ready = sum(1 for w in version["workers"] if w["status"] in ("READY", "BUSY"))
    return f"{ready}/{version['minWorkers']}"


@click.command()
@_options
def models(
    management_address: str | None, metrics_address: str | None, state_dir: Path | None, token: str | None
) -> None:
    """List registered models and versions."""
    view = ServerView(management_address, metrics_address, state_dir, token)
    rows = [
        [
            v["modelName"],
            v["modelVersion"],
            "yes" if v["isDefault"] else "",
            v["status"],
            _workers(v),
            str(v["batchSize"]),
            v["modelUrl"],
        ]
        for v in view.versions()
    ]
    click.echo(table(["MODEL", "VERSION", "DEFAULT", "STATUS", "WORKERS", "BATCH", "ARCHIVE"], rows))


@click.command()
@_options
def status(
    management_address: str | None, metrics_address: str | None, state_dir: Path | None, token: str | None
) -> None:
    """Server health, and per model version: workers, queue, requests and the last minute's error rate."""
    view = ServerView(management_address, metrics_address, state_dir, token)
    versions = view.versions()
    samples = view.samples()

    def metric(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def requests_of(model: str, version: str, outcome: str) -> int:
        return int(
            sum(
                value
                for (name, labels), value in samples.items()
                if name == "dms_requests_total"
                and ("model", model) in labels
                and ("version", version) in labels
                and ("outcome", outcome) in labels
            )
        )

    rows = []
    for v in versions:
        name, version = v["modelName"], v["modelVersion"]
        ok, client, server = (requests_of(name, version, o) for o in ("success", "client_error", "server_error"))
        recent = metric("dms_recent_error_ratio", model=name, version=version)
        rows.append(
            [
                name,
                version,
                v["status"],
                _workers(v),
                str(v["jobQueueStatus"]["pendingRequests"]),
                str(ok),
                str(client),
                str(server),
                f"{recent:.1%}",
                str(v["restarts"]),
            ]
        )
    healthy = all(v["status"] == "READY" for v in versions)
    click.echo(
        f"server: {'healthy' if healthy else 'degraded'} (management {view.management}, "
        f"metrics {view.metrics if samples else 'unreachable'})"
    )
    click.echo(
        table(["MODEL", "VERSION", "STATUS", "WORKERS", "QUEUE", "OK", "4XX", "5XX", "ERR/60s", "RESTARTS"], rows)
    )
