"""The image specs, read as text: every COPY source exists in the build context and is not
excluded by .dockerignore, the image runs as a non-root user and carries no build tools,
torch comes pinned from requirements-image.txt, the commit is baked in, and the compose file
exposes the same variables the code reads, on loopback only. (The CPU image is also built
and run for real: tests/integration/test_container.py, marker `container`.)"""

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
def test_non_root_no_build_tools(dockerfile: Path) -> None:
    final = stages(dockerfile)[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, "the image must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]} is root"
    text = " ".join(args for _, args in instructions(dockerfile))
    for tool in ("build-essential", "gcc", "g++", "make "):  # every pin installs from a wheel or pure Python
        assert tool not in text, f"{tool} installed in the image"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_torch_version_comes_from_requirements(dockerfile: Path) -> None:
    pins = dict(ln.split("==") for ln in (ROOT / "requirements-image.txt").read_text().splitlines()
                if "==" in ln and not ln.startswith("#"))
    assert pins["torch"] == "2.13.0" and "mlflow-skinny" in pins and "mlflow" not in pins
    assert "-r requirements-image.txt" in (ROOT / "requirements.txt").read_text()  # one set of pins
    text = dockerfile.read_text()
    assert "grep -E '^torch==' /tmp/requirements-image.txt" in text
    assert "pip install -r /tmp/requirements-image.txt" in text
    index = "whl/cu" if dockerfile.name.endswith(".cuda") else "whl/cpu"
    assert index in text


def test_every_package_dependency_is_pinned_for_the_image() -> None:
    """The image installs requirements-image.txt, then the package with --no-deps: a dependency
    added to pyproject.toml without a pin there would be missing (or unpinned) in the pods."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in deps}
    pins = {ln.split("==")[0].lower() for ln in (ROOT / "requirements-image.txt").read_text().splitlines()
            if "==" in ln and not ln.startswith("#")}
    # The package needs the full MLflow for local runs (sqlite store, UI); pods only talk to a
    # server, which the client subset (mlflow-skinny) does.
    if "mlflow-skinny" in pins:
        names.discard("mlflow")
    assert names - pins == set(), "pin these in requirements-image.txt"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_commit_is_baked_in_as_env_and_oci_label(dockerfile: Path) -> None:
    final = instructions(dockerfile)
    assert ("ARG", "GIT_COMMIT=unknown") in final
    assert ("ENV", "GIT_COMMIT=${GIT_COMMIT}") in final  # export.git_commit() reads it for the model card
    labels = " ".join(args for word, args in final if word == "LABEL")
    assert "org.opencontainers.image.revision=${GIT_COMMIT}" in labels


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
