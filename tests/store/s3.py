"""A real S3 implementation for the object-store tests: moto's server mode on 127.0.0.1,
started by the tests (benchmarks/s3_server.py), one per test session and worker."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_server_module():
    spec = importlib.util.spec_from_file_location("s3_server_benchmark", REPO / "benchmarks" / "s3_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


s3_server_module = _load_server_module()
S3Server = s3_server_module.S3Server
TcpProxy = s3_server_module.TcpProxy


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("moto", reason="moto[server] is a dev dependency: pip install -e '.[dev]'")
    pytest.importorskip("s3fs", reason="s3fs is a dev dependency: pip install -e '.[dev]'")
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """The AWS variables pointing at the test server, and a cache folder of this test's own."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("TRAINDOCTOR_CACHE_DIR", str(tmp_path / "cache"))
    return s3_server


@pytest.fixture
def s3_url(s3_env) -> str:
    """``s3://<a new bucket>/runs``: every test gets its own bucket."""
    bucket = f"td-{secrets.token_hex(6)}"
    s3_env.create_bucket(bucket)
    return f"s3://{bucket}/runs"
