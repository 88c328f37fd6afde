"""DVC against the real S3 server: push a dataset, then — in a fresh clone with neither the
data nor a DVC cache — let prepare_data (data.source=dvc) pull it at a pinned revision."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import write_idx

from gandistill.config import Params, validate
from gandistill.data.dvc_hash import dir_md5
from gandistill.errors import DataError
from gandistill.stages import prepare_data

DVC = str(Path(sys.executable).parent / "dvc")


def _run(cmd: list[str], cwd: Path) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout.strip()


@pytest.fixture
def pushed_repo(s3_env: dict[str, str], tmp_path: Path) -> tuple[Path, str]:
    """A git+DVC repo whose `data/` (small IDX digits) is pushed to s3://dvc/<unique>."""
    repo = tmp_path / "origin"
    digits = repo / "data" / "digits"
    digits.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(digits / "train-images-idx3-ubyte", (rng.integers(0, 256, (400, 28, 28))).astype(np.uint8))
    write_idx(digits / "train-labels-idx1-ubyte", (np.arange(400) % 10).astype(np.uint8))
    write_idx(digits / "t10k-images-idx3-ubyte", (rng.integers(0, 256, (100, 28, 28))).astype(np.uint8))
    write_idx(digits / "t10k-labels-idx1-ubyte", (np.arange(100) % 10).astype(np.uint8))
    _run(["git", "init", "-q"], repo)
    _run(["git", "config", "user.email", "it@example.invalid"], repo)
    _run(["git", "config", "user.name", "integration"], repo)
    _run([DVC, "init", "-q"], repo)
    _run([DVC, "remote", "add", "-d", "store", f"s3://dvc/it-{tmp_path.name}"], repo)
    # The endpoint goes to the git-ignored local config, as a user would do it.
    _run([DVC, "remote", "modify", "--local", "store", "endpointurl", s3_env["AWS_ENDPOINT_URL"]], repo)
    _run([DVC, "add", "-q", "data"], repo)
    _run(["git", "add", "data.dvc", ".gitignore", ".dvc/config", ".dvc/.gitignore"], repo)
    _run(["git", "commit", "-qm", "data v1"], repo)
    _run([DVC, "push", "-q"], repo)
    return repo, _run(["git", "rev-parse", "HEAD"], repo)


def _params(repo: str, rev: str) -> Params:
    return validate({"data": {"source": "dvc", "dvc_repo": repo, "dvc_rev": rev, "path": "data/digits"}})


def test_prepare_data_pulls_pinned_revision_from_remote(pushed_repo: tuple[Path, str], tmp_path: Path) -> None:
    origin, rev = pushed_repo
    recorded = yaml.safe_load((origin / "data.dvc").read_text())["outs"][0]["md5"]
    assert dir_md5(origin / "data") == recorded
    originals = {p.name: p.read_bytes() for p in (origin / "data" / "digits").iterdir()}

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "data").exists() and not (clone / ".dvc" / "cache").exists()  # nothing local
    # A later commit must not leak into a run pinned to `rev`.
    shutil.rmtree(origin / "data" / "digits")
    result = prepare_data.run(_params(str(clone), rev), tmp_path / "out")

    version = result["version"]
    assert version["dvc_md5"] == recorded and version["dvc_commit"] == rev and version["dvc_rev"] == rev
    for name, content in originals.items():
        assert version[name] == hashlib.md5(content).hexdigest()  # every file as committed
    assert result["counts"]["test"] == 100 and sum(result["counts"].values()) == 500
    assert not (clone / "data").exists()  # materialised in a temp folder, not the clone


def test_git_url_and_unknown_revision(pushed_repo: tuple[Path, str], tmp_path: Path) -> None:
    origin, rev = pushed_repo
    # A git URL: DVC clones it; the remote's endpoint comes from AWS_ENDPOINT_URL (no local config there).
    result = prepare_data.run(_params(f"file://{origin}", rev), tmp_path / "out")
    assert result["version"]["dvc_commit"] == rev
    with pytest.raises(DataError, match="dvc_rev"):
        prepare_data.run(_params(str(origin), "no-such-revision"), tmp_path / "out2")
