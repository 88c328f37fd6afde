"""Real local servers for the integration tests, shared by the whole session.

SeaweedFS (S3 API) and an MLflow server are started with scripts/stack.py — the same code
as `make stack-up` — on 127.0.0.1 only, in a temporary folder, with generated credentials.
A session finalizer ALWAYS stops them (it is registered before anything starts). The MLflow
server (~15-40 s to start) is started only when a test asks for `mlflow_server`.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_stack_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gandistill_stack", ROOT / "scripts" / "stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


stack_mod = _load_stack_module()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    folder = tmp_path_factory.mktemp("stack")
    request.addfinalizer(lambda: stack_mod.down(folder))  # before starting: always stops
    return folder


@pytest.fixture(scope="session")
def object_store(stack_dir: Path) -> Any:
    """A running SeaweedFS; `.env()` gives the AWS_* variables that reach it."""
    return stack_mod.up(stack_dir, mlflow=False)


@pytest.fixture(scope="session")
def mlflow_server(stack_dir: Path, object_store: Any) -> Any:
    """The same stack plus an MLflow server whose artifacts go to s3://gandistill/mlflow."""
    return stack_mod.up(stack_dir, mlflow=True)


@pytest.fixture
def s3_env(object_store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This test's process talks to the session's SeaweedFS (and nothing else)."""
    from gandistill import storage

    env = object_store.env()
    env.pop("MLFLOW_TRACKING_URI", None)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    storage._client.cache_clear()
    yield env
    storage._client.cache_clear()
