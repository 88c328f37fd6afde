"""The image specs (no Docker daemon here): every COPY source exists in the build context and
is not excluded by .dockerignore, the final stage runs as a non-root user and carries no
build tools, torch comes pinned from requirements.txt, and the compose file exposes the same
variables the code reads, on loopback only."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def ignored(rel: str) -> bool:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat) for pat in patterns for p in prefixes)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_are_in_the_context(dockerfile: Path) -> None:
    copies = [shlex.split(args) for word, args in instructions(dockerfile) if word in {"COPY", "ADD"}]
    assert copies
    for args in copies:
        if any(a.startswith("--from=") for a in args):
            continue  # from another stage, not the context
        sources = [a for a in args if not a.startswith("--")][:-1]
        for src in sources:
            assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src} — no such file in the repo"
            assert not ignored(src), f"{dockerfile.name}: COPY {src} is excluded by .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_non_root_no_build_tools(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2, "multi-stage: build tools must stay in the build stage"
    final = all_stages[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]} is root"
    final_text = " ".join(args for _, args in final)
    for tool in ("build-essential", "gcc", "g++", "make "):
        assert tool not in final_text, f"{tool} installed in the final stage"
    assert any(w == "COPY" and "--from=build" in a and "/opt/venv" in a for w, a in final)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_torch_version_comes_from_requirements(dockerfile: Path) -> None:
    pins = dict(ln.split("==") for ln in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in ln and not ln.startswith("#"))
    assert pins["torch"] == "2.13.0"
    text = dockerfile.read_text()
    assert "grep -E '^torch==' /src/requirements.txt" in text and "pip install -r /src/requirements.txt" in text
    index = "whl/cu" if dockerfile.name.endswith(".cuda") else "whl/cpu"
    assert index in text


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    for path in (".venv/bin/python", ".stack/stack.json", ".dvc/config.local", "data/mnist/x", ".git/HEAD",
                 "runs/kfp/x", "mlflow.db"):
        assert ignored(path), path
    for path in ("gandistill/storage.py", "requirements.txt", "params.yaml", "data.dvc"):
        assert not ignored(path), path


def test_compose_stack_matches_the_code() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"minio", "postgres", "mlflow"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    env = services["mlflow"]["environment"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"} <= set(env)
    command = services["mlflow"]["command"]
    assert "postgresql://" in command and "--artifacts-destination s3://gandistill/mlflow" in command
    assert "mc mb --ignore-existing local/gandistill local/dvc" in services["buckets"]["entrypoint"]
