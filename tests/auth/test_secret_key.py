"""SECRET_KEY: required in production, made once and kept under instance/ on the embedded default."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

import config

ROOT = Path(__file__).resolve().parents[2]


def test_the_embedded_default_makes_a_key_once_readable_by_its_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(config, "INSTANCE_DIR", tmp_path)
    key = config.secret_key()
    assert len(key) >= 64
    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.secret_key() == key  # kept: sign-ins survive a restart


def test_a_given_secret_key_wins(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert config.secret_key() == "from-the-environment"


def _gunicorn_conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_production_refuses_to_start_without_a_secret_key(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal/trackopz")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    server = SimpleNamespace(cfg=SimpleNamespace(workers=1), log=SimpleNamespace(info=print))
    with pytest.raises(SystemExit) as stopped:
        _gunicorn_conf().on_starting(server)
    assert "set SECRET_KEY" in str(stopped.value)
