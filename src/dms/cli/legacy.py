"""``deep-model-export`` and ``deep-model-server``: the original DMS command lines, on today's server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dms.cli.serving import serve
from dms.errors import ArchiveError
from dms.legacy.archive import export_legacy_archive


@click.command("deep-model-export")
@click.option("--model-name", required=True, help="Name of the model; the archive is NAME.model.")
@click.option(
    "--model-path",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder with the weights (.onnx, TorchScript .pt, or .pt2), signature.json, synset.txt and any assets.",
)
@click.option(
    "--service-file-path",
    type=click.Path(path_type=Path),
    help="A handler file (handle(data, context) or a handler class); default: the built-in vision service.",
)
@click.option("--export-path", type=click.Path(path_type=Path), default=Path("."), help="Where to write it [.].")
@click.option("--license", "license_name", default="unspecified", help="The License field of the manifest.")
def export_command(
    model_name: str, model_path: Path, service_file_path: Path | None, export_path: Path, license_name: str
) -> None:
    """Pack a model folder into a NAME.model archive."""
    try:
        target = export_legacy_archive(model_name, model_path, export_path, service_file_path, license_name)
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {target}")


@click.command("deep-model-server")
@click.option("--models", multiple=True, required=True, help="NAME=PATH-OR-URL of a .model archive (repeatable).")
@click.argument("extra_models", nargs=-1)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve /{model}/predict on.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--state-dir", type=click.Path(path_type=Path), help="Pid, key and log files [~/.dms].")
@click.option(
    "--allowed-urls",
    multiple=True,
    help="Regex a remote .model URL must match (repeatable); none are fetched otherwise.",
)
@click.pass_context
def server_command(
    ctx: click.Context, /, models: tuple[str, ...], extra_models: tuple[str, ...], **kwargs: Any
) -> None:
    """Serve .model archives: POST /{model}/predict with multipart fields, GET /api-description."""
    ctx.invoke(
        serve,
        models=models,
        extra_models=extra_models,
        host=kwargs["host"],
        port=kwargs["port"],
        state_dir=kwargs["state_dir"],
        allowed_urls=kwargs["allowed_urls"],
        no_default_model=True,
        no_snapshot=True,
    )


def export_main() -> None:
    export_command()


def server_main() -> None:
    server_command()
