"""``dms serve``, ``dms start`` (serve in the background) and ``dms stop``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from dms.auth import read_key
from dms.engine import interpreters
from dms.observability.logs import configure_logging
from dms.settings import ServerSettings, load_settings
from dms.torchserve_config import TorchServeConfig, TorchServeConfigError, read_torchserve_config


def server_options(fn: Any) -> Any:
    options = [
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML settings file."),
        click.option(
            "--ts-config",
            "ts_config_file",
            type=click.Path(path_type=Path),
            envvar="TS_CONFIG_FILE",
            help="TorchServe's config.properties (over the TOML file; env and flags over both).",
        ),
        click.option(
            "--kserve-storage",
            type=click.Path(path_type=Path),
            help="What KServe's storage initializer left (/mnt/models): a TorchServe model store and "
            "config/config.properties, or one model file (or a folder holding one).",
        ),
        click.option("--kserve-model-name", help="The name of the one model --kserve-storage holds [model]."),
        click.option(
            "--trust-pickled-models",
            is_flag=True,
            help="Load pickled (joblib) scikit-learn files served bare, as KServe's model.joblib.",
        ),
        click.option(
            "--service-envelope",
            type=click.Choice(["none", "kserve", "kservev2", "kfserving", "kfservingv2", "json", "body"]),
            help="How KServe requests reach a TorchServe-style handler (TorchServe's service_envelope) [none].",
        ),
        click.option("--model-store", type=click.Path(path_type=Path), help="Folder of model archives."),
        click.option("--models", multiple=True, help="name=archive, archive, or 'all' (repeatable)."),
        click.option("--inference-address", help="host:port of the inference API [127.0.0.1:8080]."),
        click.option("--management-address", help="host:port of the management API [127.0.0.1:8081]."),
        click.option("--metrics-address", help="host:port of the metrics endpoint [127.0.0.1:8082]."),
        click.option(
            "--grpc-address",
            help="host:port of gRPC inference: the Open Inference Protocol's and TorchServe's [127.0.0.1:7070].",
        ),
        click.option(
            "--grpc-management-address",
            help="host:port of TorchServe's gRPC management API (TorchServe's: 127.0.0.1:7071) [not served].",
        ),
        click.option(
            "--grpc-server",
            type=click.Choice(["dms", "grpcio", "uvicorn"]),
            help="What serves gRPC: DMS's own HTTP/2 (less CPU per call; 'uvicorn', its former name), or grpcio [dms].",
        ),
        click.option(
            "--tls-certificate-file",
            type=click.Path(path_type=Path),
            help="PEM certificate (chain): with --tls-private-key-file, every port serves TLS only.",
        ),
        click.option("--tls-private-key-file", type=click.Path(path_type=Path), help="The certificate's PEM key."),
        click.option("--default-workers-per-model", type=int, help="Workers per model version."),
        click.option(
            "--ray-address",
            help="Run the workers as actors on this Ray cluster (HEAD:6379, auto, or ray://HEAD:10001).",
        ),
        click.option(
            "--frontends",
            type=int,
            help="Processes serving inference and gRPC on shared ports, each with every model's workers [1].",
        ),
        click.option("--allowed-urls", multiple=True, help="Regex a remote archive URL must match (repeatable)."),
        click.option("--no-default-model", is_flag=True, help="Do not serve the bundled digits model."),
        click.option("--state-dir", type=click.Path(path_type=Path), help="Pid, key, snapshot and log files [~/.dms]."),
        click.option("--disable-token-auth", is_flag=True, help="Let the management API answer without a key."),
        click.option("--enable-inference-token-auth", is_flag=True, help="Require the inference key too."),
        click.option("--no-snapshot", is_flag=True, help="Start clean; do not write snapshots."),
        click.option("--wrapper", type=click.Path(path_type=Path), help="A file defining create_model(modeldir)."),
        click.option(
            "--model-dir",
            type=click.Path(path_type=Path),
            help="The wrapper's model folder (or: serve its newest checkpoint).",
        ),
        click.option("--host", help="Inference host (with --port; the same as --inference-address)."),
        click.option("--port", type=int, help="Inference port."),
        click.option("--killafter", "kill_after_s", type=float, help="Stop after this many seconds without a request."),
        click.option("--allow-pickle", is_flag=True, help="Let the wrapper workflow unpickle request bodies."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"])),
        click.option("--log-format", type=click.Choice(["plain", "json"]), help="Plain lines or JSON lines."),
        click.option("--logger-level", "logger_levels", multiple=True, help="LOGGER=LEVEL, e.g. dms.access=warning."),
        click.option("--no-access-log", is_flag=True, help="Do not write a line per request."),
        click.argument("extra_models", nargs=-1),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def settings_from_cli(kwargs: dict[str, Any]) -> tuple[ServerSettings, list[str], list[str]]:
    """Settings from the CLI flags on top of env and TOML; also the argv to re-run ``serve``, and the keys of
    TorchServe's ``config.properties`` (``--ts-config``) that DMS does not use, for the server to name."""
    config_file = kwargs.pop("config_file")
    ts_config_file = kwargs.pop("ts_config_file")
    models = [*kwargs.pop("models"), *kwargs.pop("extra_models")]
    storage, storage_model = kwargs.pop("kserve_storage"), kwargs.pop("kserve_model_name")
    if storage is not None:
        ts_config_file, models = _kserve_layout(storage, storage_model or "model", ts_config_file, models, kwargs)
    torchserve = _read_ts_config(ts_config_file) if ts_config_file else None
    allowed = list(kwargs.pop("allowed_urls"))
    logger_levels = dict(entry.split("=", 1) for entry in kwargs.pop("logger_levels") if "=" in entry)
    overrides: dict[str, Any] = {k: v for k, v in kwargs.items() if v is not None}
    host, port = overrides.pop("host", None), overrides.pop("port", None)
    if host is not None or port is not None:
        overrides["inference_address"] = f"{host or '127.0.0.1'}:{port or 8080}"
    for flag, setting, value in (
        ("no_default_model", "default_model", False),
        ("disable_token_auth", "token_auth", False),
        ("enable_inference_token_auth", "inference_token_auth", True),
        ("no_snapshot", "snapshot", False),
        ("no_access_log", "access_log", False),
        ("allow_pickle", "allow_pickle", True),
        ("trust_pickled_models", "trust_pickled_models", True),
    ):
        if overrides.pop(flag, False):
            overrides[setting] = value
    if models:
        overrides["models"] = models
    if allowed:
        overrides["allowed_urls"] = allowed
    if logger_levels:
        overrides["logger_levels"] = logger_levels
    try:
        settings = load_settings(config_file, torchserve.settings if torchserve else None, **overrides)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc
    argv = ["--config", str(config_file)] if config_file else []
    if ts_config_file:
        argv += ["--ts-config", str(ts_config_file)]
    # Each value goes back under the flag it came from: the options' own first spelling.
    flags = {param.name: param.opts[0] for param in serve.params if isinstance(param, click.Option)}
    for key, value in overrides.items():
        if isinstance(value, bool):
            argv.append(_BOOL_FLAGS[key])
        elif isinstance(value, list):
            for entry in value:
                argv += [flags[key], str(entry)]
        elif isinstance(value, dict):
            for logger, level in value.items():
                argv += ["--logger-level", f"{logger}={level}"]
        else:
            argv += [flags[key], str(value)]
    return settings, argv, torchserve.unused if torchserve else []


def _kserve_layout(
    storage: Path, name: str, ts_config_file: Path | None, models: list[str], kwargs: dict[str, Any]
) -> tuple[Path | None, list[str]]:
    """``--kserve-storage``: TorchServe's layout (``config/config.properties``, ``model-store/``) is served as
    ``--ts-config`` and ``--model-store`` would serve it; anything else is one bare model named ``name``."""
    properties = storage / "config" / "config.properties"
    if properties.is_file():
        if kwargs.get("model_store") is None and (storage / "model-store").is_dir():
            kwargs["model_store"] = storage / "model-store"
        return ts_config_file or properties, models
    return ts_config_file, models or [f"{name}={storage}"]


def _read_ts_config(path: Path) -> TorchServeConfig:
    try:
        return read_torchserve_config(path)
    except TorchServeConfigError as exc:
        raise click.ClickException(f"--ts-config {path}: {exc}") from None


def log_unused_ts_keys(argv: list[str], unused: list[str]) -> None:
    """Name, once, the keys of TorchServe's ``config.properties`` that DMS does not use."""
    if unused:
        path = argv[argv.index("--ts-config") + 1]
        logging.getLogger("dms.server").warning(
            "--ts-config %s: DMS does not use %s (see docs/deploy.md)", path, ", ".join(unused)
        )


_BOOL_FLAGS = {
    "default_model": "--no-default-model",
    "token_auth": "--disable-token-auth",
    "inference_token_auth": "--enable-inference-token-auth",
    "snapshot": "--no-snapshot",
    "access_log": "--no-access-log",
    "allow_pickle": "--allow-pickle",
    "trust_pickled_models": "--trust-pickled-models",
}


def likely_startup_workers(settings: ServerSettings) -> int:
    """The workers the start-up models will likely start: the default count for each model named (the bundled
    model when none is), at most one per core, since more would only slow the start they are started for.

    A guess made before the server (and the models' configs) are read: interpreters left over are ended once
    the models have loaded, and a worker with none left starts its own.
    """
    if settings.ray_address is not None:
        return 0  # its workers start on the cluster's nodes
    if settings.wrapper is not None or settings.model_dir is not None:
        models = 1
    else:
        models = len(settings.model_items) or int(settings.default_model)
    return min(models * settings.default_workers_per_model, os.cpu_count() or 1)


def _running_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


@click.command()
@server_options
@click.option("--foreground/--background", default=True, help="serve runs in the foreground (default).")
def serve(foreground: bool, **kwargs: Any) -> None:
    """Serve models (the bundled digits model when none is named)."""
    settings, argv, unused_ts_keys = settings_from_cli(kwargs)
    if not foreground:
        _start_background(settings, argv)
        return
    pid = _running_pid(settings.pid_file)
    if pid is not None and pid != os.getpid():
        raise click.ClickException(
            f"a DMS server is already running with pid {pid} ({settings.pid_file}); run 'dms stop' first"
        )
    configure_logging(settings.log_level, settings.log_format, dict(settings.logger_levels), settings.access_log)
    log_unused_ts_keys(argv, unused_ts_keys)
    # The workers' interpreters start now, to overlap with the server's own imports (each core does one).
    interpreters.prestart(likely_startup_workers(settings))
    from dms.server import run

    sys.exit(run(settings))


@click.command()
@server_options
@click.option("--log-file", type=click.Path(path_type=Path), help="Server log [next to the pid file].")
@click.option("--wait-s", type=float, default=300.0, help="How long to wait for readiness.")
def start(log_file: Path | None, wait_s: float, **kwargs: Any) -> None:
    """Start the server in the background; return once it is ready."""
    settings, argv, _ = settings_from_cli(kwargs)
    _start_background(settings, argv, log_file, wait_s)


def _start_background(
    settings: ServerSettings, argv: list[str], log_file: Path | None = None, wait_s: float = 300.0
) -> None:
    pid = _running_pid(settings.pid_file)
    if pid is not None:
        raise click.ClickException(f"a DMS server is already running with pid {pid}; run 'dms stop' first")
    log_path = log_file or settings.log_file
    log_path.parent.mkdir(parents=True, exist_ok=True)
    settings.pid_file.unlink(missing_ok=True)
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log_out:
        child = subprocess.Popen(
            [sys.executable, "-m", "dms", "serve", "--state-dir", str(settings.state_dir), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_out,
            stderr=log_out,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            reason = failure_reason(log_path, log_start)
            raise click.ClickException(
                f"the server exited with code {child.returncode}{': ' + reason if reason else ''} (log: {log_path})"
            )
        if _running_pid(settings.pid_file) == child.pid:
            click.echo(f"DMS started (pid {child.pid}); log: {log_path}")
            return
        time.sleep(0.1)
    child.terminate()
    raise click.ClickException(f"the server was not ready within {wait_s:g} s; see {log_path}")


def failure_reason(log_path: Path, start: int) -> str:
    """Why a server that ``dms start`` started has ended, from what it wrote to its log from ``start`` on: its own
    one-line ``error:`` (a busy port, say) or a command-line error, else the message of its last ERROR line."""
    try:
        with log_path.open("rb") as log:
            log.seek(start)
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    plain = [line.strip() for line in lines if line.startswith(("error: ", "Error: "))]
    if plain:
        return plain[-1]
    logged = [line.split(" ERROR ", 1)[1].strip() for line in lines if " ERROR " in line]
    return logged[-1] if logged else ""


def _state_settings(state_dir: Path | None) -> ServerSettings:
    return load_settings(state_dir=state_dir)


@click.command()
@click.option("--state-dir", type=click.Path(path_type=Path), help="The server's state folder [~/.dms].")
@click.option("--wait-s", type=float, default=60.0, help="How long to wait for it to exit.")
def stop(state_dir: Path | None, wait_s: float) -> None:
    """Stop a server started with 'dms start' (or any 'dms serve' with the same state folder)."""
    path = _state_settings(state_dir).pid_file
    pid = _running_pid(path)
    if pid is None:
        raise click.ClickException(f"no running DMS server found ({path})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if _running_pid(path) != pid:
            click.echo(f"DMS stopped (pid {pid})")
            return
        time.sleep(0.1)
    raise click.ClickException(f"server pid {pid} did not stop within {wait_s:g} s")


@click.command()
@click.option("--state-dir", type=click.Path(path_type=Path), help="The server's state folder [~/.dms].")
@click.option("--type", "kind", type=click.Choice(["management", "inference"]), default="management")
def token(state_dir: Path | None, kind: str) -> None:
    """Print the running server's API key, e.g. curl -H "Authorization: Bearer $(dms token)" ..."""
    settings = _state_settings(state_dir)
    key_file = settings.key_file
    try:
        click.echo(read_key(key_file, kind))  # type: ignore[arg-type]
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise click.ClickException(
            f"no {kind} key in {key_file} ({exc}); is the server running with token auth?"
        ) from None
    if _running_pid(settings.pid_file) is None:  # keys are new at every start: this one may be of a server gone
        click.echo(
            f"warning: no DMS server is running with this state folder ({settings.pid_file}): the key may be stale; "
            "the next server writes new keys when it starts",
            err=True,
        )
