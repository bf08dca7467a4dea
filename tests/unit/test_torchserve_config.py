"""TorchServe's config.properties read as DMS settings, and keys given to the server rather than made by it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from dms.auth import KeyStore, supplied_keys
from dms.errors import InputError, UnauthorizedError
from dms.settings import load_settings
from dms.torchserve_config import TorchServeConfigError, read_torchserve_config

KSERVE_EXAMPLE = """\
inference_address=http://0.0.0.0:8085
management_address=http://0.0.0.0:8085
metrics_address=http://0.0.0.0:8082
grpc_inference_port=7070
grpc_management_port=7071
enable_envvars_config=true
install_py_dep_per_model=true
enable_metrics_api=true
metrics_format=prometheus
number_of_netty_threads=4
job_queue_size=10
model_store=/mnt/models/model-store
model_snapshot={"name":"startup.cfg","modelCount":1,"models":{"mnist":{"1.0":{"defaultVersion":true,\\
"marName":"mnist.mar","minWorkers":1,"maxWorkers":5,"batchSize":1,"maxBatchDelay":10,"responseTimeout":120}}}}
"""


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.properties"
    path.write_text(text)
    return path


def test_kserves_torchserve_example(tmp_path):
    config = read_torchserve_config(written(tmp_path, KSERVE_EXAMPLE), environ={})
    assert config.settings == {
        "registered_model_workers": 0,  # TorchServe's management API starts none unless asked
        "torchserve_metrics": True,  # its dashboards read TorchServe's metric names
        "inference_address": "0.0.0.0:8085",
        "management_address": "0.0.0.0:8085",
        "metrics_address": "0.0.0.0:8082",
        "grpc_address": "0.0.0.0:7070",
        "grpc_management_address": "0.0.0.0:7071",
        "job_queue_size": 10,
        "model_store": Path("/mnt/models/model-store"),
        "models": ["mnist=mnist.mar"],
        "model_settings": {
            "mnist": {
                "initial_workers": 1,
                "max_workers": 5,
                "batch_size": 1,
                "max_batch_delay_ms": 10,
                "response_timeout_s": 120,
            }
        },
    }
    assert config.unused == [
        "enable_metrics_api",
        "install_py_dep_per_model",
        "number_of_netty_threads",
    ]


def test_ts_variables_only_when_the_file_enables_them(tmp_path):
    environ = {"TS_SERVICE_ENVELOPE": "kservev2", "TS_JOB_QUEUE_SIZE": "7", "TS_MAX_REQUEST_SIZE": "  "}
    enabled = read_torchserve_config(written(tmp_path, KSERVE_EXAMPLE + "service_envelope=kserve\n"), environ)
    assert enabled.settings["service_envelope"] == "kservev2" and enabled.settings["job_queue_size"] == 7
    assert "max_request_size_bytes" not in enabled.settings  # an empty variable (a KServe label not set) is unset
    disabled = KSERVE_EXAMPLE.replace("enable_envvars_config=true", "enable_envvars_config=false")
    assert read_torchserve_config(written(tmp_path, disabled), environ).settings["job_queue_size"] == 10


def test_the_other_keys_and_load_models(tmp_path):
    models = {"a": {"1.0": {"minWorkers": 2, "marName": "a.mar"}, "2.0": {"defaultVersion": True, "batchSize": 8}}}
    text = "\n".join(
        [
            "load_models=a=a-1.mar, a=a-2.mar,b.mar",
            f"models={json.dumps(models)}",
            "default_workers_per_model=3",
            "allowed_urls=https://s3.amazonaws.com/.*,https://torchserve.pytorch.org/.*",
            "disable_token_authorization=true",
            "max_request_size=1000",
            "max_response_size=2000",
            "service_envelope=kfservingv2",
            "default_response_timeout=30",
            "model_store=store",
            "inference_address=http://[::1]:9000",
        ]
    )
    settings = read_torchserve_config(written(tmp_path, text), environ={}).settings
    assert settings["models"] == ["a=a-1.mar", "a=a-2.mar", "b.mar"]
    assert settings["model_settings"] == {"a": {"batch_size": 8}}
    assert settings["default_versions"] == {"a": "2.0"}
    assert settings["model_store"] == tmp_path / "store"  # relative to the file, as the file is what names it
    loaded = load_settings(None, settings)
    assert loaded.default_workers_per_model == 3 and loaded.token_auth is False
    assert loaded.allowed_urls == ["https://s3.amazonaws.com/.*", "https://torchserve.pytorch.org/.*"]
    assert (loaded.max_request_size_bytes, loaded.max_response_size_bytes) == (1000, 2000)
    assert loaded.service_envelope == "kservev2" and loaded.response_timeout_s == 30
    assert loaded.inference_address == "[::1]:9000"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("inference_address=https://0.0.0.0:8443", "https needs certificate_file and private_key_file"),
        ("inference_address=0.0.0.0:8080", "expected http://HOST:PORT"),
        ("certificate_file=cert.pem", "certificate_file needs its pair"),
        ("models={not json", "models is not valid JSON"),
        ('models={"a": [1]}', "models must map each model name"),
        ('model_snapshot={"models": {"a": {"1.0": {}}}}', "has no marName"),
        ("job_queue_size=ten", "job_queue_size=ten: expected a whole number"),
        ("metrics_format=log", "DMS serves prometheus only"),
    ],
)
def test_what_dms_cannot_honour_is_named(tmp_path, text, named):
    with pytest.raises(TorchServeConfigError, match=named):
        read_torchserve_config(written(tmp_path, text), environ={})


def test_tls_and_torchserves_grpc_ports_are_read(tmp_path):
    text = (
        "inference_address=https://127.0.0.1:8443\nmanagement_address=https://127.0.0.1:8444\n"
        "certificate_file=certs/cert.pem\nprivate_key_file=/etc/key.pem\n"
        "grpc_inference_port=7075\ngrpc_management_port=7076\n"
    )
    settings = read_torchserve_config(written(tmp_path, text), environ={}).settings
    assert settings["inference_address"] == "127.0.0.1:8443" and settings["management_address"] == "127.0.0.1:8444"
    assert settings["tls_certificate_file"] == tmp_path / "certs/cert.pem"
    assert settings["tls_private_key_file"] == Path("/etc/key.pem")
    assert settings["grpc_tls"] is False  # TorchServe's enable_grpc_ssl is false unless set
    assert (settings["grpc_address"], settings["grpc_management_address"]) == ("127.0.0.1:7075", "127.0.0.1:7076")
    with_grpc_tls = read_torchserve_config(written(tmp_path, text + "enable_grpc_ssl=true\n"), environ={})
    assert with_grpc_tls.settings["grpc_tls"] is True


def test_precedence_toml_then_ts_config_then_env_then_flags(tmp_path, monkeypatch):
    toml = tmp_path / "dms.toml"
    toml.write_text('job_queue_size = 1\ninference_address = "127.0.0.1:1"\nbatch_size = 2\n')
    ts = {"job_queue_size": 10, "inference_address": "0.0.0.0:8085"}
    monkeypatch.setenv("DMS_INFERENCE_ADDRESS", "0.0.0.0:9090")
    loaded = load_settings(toml, ts)
    assert (loaded.batch_size, loaded.job_queue_size, loaded.inference_address) == (2, 10, "0.0.0.0:9090")
    assert load_settings(toml, ts, inference_address="0.0.0.0:8080").inference_address == "0.0.0.0:8080"


def test_two_apis_on_one_port_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match="inference_address and management_address are both on port 8085"):
        load_settings(None, {"inference_address": "0.0.0.0:8085", "management_address": "0.0.0.0:8085"})
    load_settings(None, {"inference_address": "127.0.0.1:8085", "management_address": "127.0.0.2:8085"})


def test_given_keys_are_used_as_given_and_never_written(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("a-management-key-from-a-secret\n")
    monkeypatch.setenv("DMS_INFERENCE_KEY", "an-inference-key-from-env")
    settings = load_settings(None, None, management_key_file=secret, state_dir=tmp_path / "state")
    keys = KeyStore(settings.key_file, supplied_keys(settings))
    keys.check("management", "Bearer a-management-key-from-a-secret")
    keys.check("inference", "Bearer an-inference-key-from-env")
    assert not settings.key_file.exists()
    with pytest.raises(InputError, match="was given to the server"):
        keys.rotate("management")
    with pytest.raises(UnauthorizedError, match="management_key_file"):
        keys.check("management", None)
    assert KeyStore.reading(settings.key_file, supplied_keys(settings)).key("inference") == "an-inference-key-from-env"


def test_one_given_key_and_one_made(tmp_path):
    settings = load_settings(None, None, management_key="k" * 16, state_dir=tmp_path)
    keys = KeyStore(settings.key_file, supplied_keys(settings))
    assert set(json.loads(settings.key_file.read_text())) == {"inference"}
    made = keys.rotate("inference")
    assert KeyStore.reading(settings.key_file, supplied_keys(settings)).key("inference") == made
    with pytest.raises(ValueError, match="shorter than 16 characters"):
        supplied_keys(load_settings(None, None, management_key="short"))
    with pytest.raises(ValueError, match="cannot be read"):
        supplied_keys(load_settings(None, None, management_key_file=tmp_path / "missing"))
