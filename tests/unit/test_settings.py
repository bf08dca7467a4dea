"""Settings precedence (defaults < TOML < env < CLI) and per-model config resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dms.errors import InputError
from dms.model_config import ModelConfig, parse_model_config
from dms.settings import load_settings


def test_precedence_is_defaults_then_toml_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "dms.toml"
    config.write_text(
        'inference_address = "127.0.0.1:9000"\nbatch_size = 4\njob_queue_size = 7\n'
        'management_address = "127.0.0.1:9001"\n'
    )
    monkeypatch.setenv("DMS_BATCH_SIZE", "6")
    monkeypatch.setenv("DMS_MANAGEMENT_ADDRESS", "127.0.0.1:9101")
    settings = load_settings(config, management_address="127.0.0.1:9201")
    assert settings.inference_address == "127.0.0.1:9000"  # TOML over default
    assert settings.job_queue_size == 7
    assert settings.batch_size == 6  # env over TOML
    assert settings.management_address == "127.0.0.1:9201"  # flag over env
    assert settings.metrics_address == "127.0.0.1:8082"  # default


def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with pytest.raises(ValidationError, match="host:port"):
        load_settings(inference_address="8080")
    with pytest.raises(ValidationError):
        load_settings(batch_size=0)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(ValidationError, match="no_such_setting"):
        load_settings(bad)


def test_model_config_accepts_torchserve_keys_and_resolves_defaults():
    config = parse_model_config(
        "minWorkers: 3\nbatchSize: 8\nmaxBatchDelay: 20\nresponseTimeout: 9\nhandler:\n  topk: 2\n", "model-config.yaml"
    )
    resolved = config.resolve(load_settings(job_queue_size=11))
    assert (
        resolved.initial_workers,
        resolved.batch_size,
        resolved.max_batch_delay_ms,
        resolved.response_timeout_s,
        resolved.job_queue_size,
    ) == (3, 8, 20, 9, 11)
    assert resolved.raw["handler"] == {"topk": 2}


def test_registration_overrides_the_archive_config():
    config = ModelConfig.model_validate({"batch_size": 8, "initial_workers": 2})
    merged = config.merged({"batch_size": 2, "initial_workers": None})
    assert (merged.batch_size, merged.initial_workers) == (2, 2)
    with pytest.raises(InputError, match="batch_size"):
        config.merged({"batch_size": 0})
    zero_delay = config.merged({"max_batch_delay_ms": 0}).resolve(load_settings())
    assert zero_delay.max_batch_delay_ms == 0
