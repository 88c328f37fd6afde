"""gandistill as a package, the way a user installs it: a wheel built from this tree (what
`pip install .` builds too), installed with its dependencies into a fresh venv, run from an
empty folder — the smoke pipeline end to end and a registry rollback with `gandistill promote`.
Slow (a venv of ~2 GB; pip's cache makes repeats faster): marker `slow`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 1200) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.mark.slow
def test_a_built_wheel_installs_in_a_fresh_venv_and_runs_the_smoke_pipeline_and_promote(
        tmp_path: Path, mnist_dir: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)], cwd=tmp_path)
    (wheel,) = dist.glob("gandistill-*.whl")
    head = subprocess.run(["git", "rev-parse", "--short=9", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # the version says which commit the wheel was built from
        assert f"+g{head.stdout.strip()}" in wheel.name, wheel.name

    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    _run([str(bin_dir / "pip"), "install", "--quiet", str(wheel)], cwd=tmp_path)
    _run([str(bin_dir / "pip"), "check"], cwd=tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GANDISTILL_", "PYTHON"))}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    version = _run(["gandistill", "--version"], cwd=empty, env=env)
    assert wheel.name.split("-")[1] in version
    # The MNIST-M-style set's photographs ship inside the package (no scikit-learn needed for them).
    _run([str(bin_dir / "python"), "-c", "from gandistill.data import mnistm; assert len(mnistm.photo_files()) == 3"],
         cwd=empty, env=env)
    _run(["gandistill", "run", "--local", "--profile", "smoke", "--set", f"data.path={mnist_dir}"],
         cwd=empty, env=env)
    summary = json.loads((empty / "runs" / "latest" / "summary.json").read_text())
    assert summary["status"] == "FINISHED"
    assert (empty / "mlflow.db").is_file()  # MLflow's sqlite store in the folder the user ran from
    out = _run(["gandistill", "promote", "--version", "1", "--alias", "challenger"], cwd=empty, env=env)
    assert "challenger" in out


def test_every_package_of_the_tree_is_in_the_wheel() -> None:
    """pyproject lists the packages by hand (components/ and pipeline/ install under other names):
    a new sub-package left out of the list is missing from every wheel and image — the editable
    install of development hides it (gandistill.stages.distill was, and the image's distill task
    failed with ModuleNotFoundError)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "gandistill").rglob("__init__.py")}
    assert found - listed == set()
    assert {"gandistill_components", "gandistill_pipeline"} <= listed
