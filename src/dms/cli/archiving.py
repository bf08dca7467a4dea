"""``dms archive``: the flags of ``torch-model-archiver``."""

from __future__ import annotations

from pathlib import Path

import click

from dms.archive.writer import ArchiveSpec, write_archive
from dms.errors import DMSError


def _paths(value: str | None) -> list[Path]:
    return [Path(part.strip()) for part in (value or "").split(",") if part.strip()]


@click.command()
@click.option("--model-name", required=True, help="Name of the model (letters, digits, _ . -).")
@click.option("-v", "--version", "version", default="1.0", show_default=True)
@click.option("--serialized-file", type=click.Path(path_type=Path), help="Weights or graph file.")
@click.option("--model-file", type=click.Path(path_type=Path), help="Python file defining the model class.")
@click.option("--handler", required=True, help="Built-in name, file.py, or module:function.")
@click.option("--extra-files", help="Comma-separated files or folders to include.")
@click.option("-r", "--requirements-file", type=click.Path(path_type=Path))
@click.option("-c", "--config-file", type=click.Path(path_type=Path), help="Model config YAML.")
@click.option("--runtime", default="python", show_default=True)
@click.option("--export-path", type=click.Path(path_type=Path), default=Path("."), show_default=True)
@click.option(
    "--archive-format",
    type=click.Choice(["default", "zip-store", "tgz", "no-archive"]),
    default="default",
    show_default=True,
)
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing archive.")
def archive(
    model_name: str,
    version: str,
    serialized_file: Path | None,
    model_file: Path | None,
    handler: str,
    extra_files: str | None,
    requirements_file: Path | None,
    config_file: Path | None,
    runtime: str,
    export_path: Path,
    archive_format: str,
    force: bool,
) -> None:
    """Package a model into a .mar archive."""
    spec = ArchiveSpec(
        model_name=model_name,
        version=version,
        handler=handler,
        serialized_file=serialized_file,
        model_file=model_file,
        extra_files=_paths(extra_files),
        requirements_file=requirements_file,
        config_file=config_file,
        runtime=runtime,
    )
    try:
        target = write_archive(spec, export_path, archive_format, force)  # type: ignore[arg-type]
    except DMSError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(str(target))
