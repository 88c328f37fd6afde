"""params.yaml schema: validation, overrides, profiles, the CLI's exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gandistill.config import Params, apply_override, load_params, validate
from gandistill.errors import ConfigError


def test_defaults_and_repo_params_are_valid(repo_root):
    assert Params().distill.method == "gan"
    params = load_params(repo_root / "params.yaml")
    assert params.teacher.arch == "lenet5"
    smoke = load_params(repo_root / "params.yaml", profile="smoke")
    assert smoke.gan.steps < params.gan.steps and smoke.data.limit_train


def test_unknown_key_suggests_the_closest_name():
    with pytest.raises(ConfigError) as err:
        validate({"teacher": {"epoch": 3}})
    assert "teacher.epoch: unknown key" in str(err.value)
    assert "did you mean 'teacher.epochs'" in str(err.value)


def test_every_problem_is_listed_with_its_path():
    with pytest.raises(ConfigError) as err:
        validate({"gan": {"lr_g": -1, "loss": "wasserstein"}, "distill": {"steps": "many"}, "bogus": {}})
    message = str(err.value)
    for path in ("gan.lr_g", "gan.loss", "distill.steps", "bogus"):
        assert path in message
    assert "4 problems" in message


def test_contradictory_settings_are_rejected():
    with pytest.raises(ConfigError, match="gan_real needs 0 < distill.real_fraction"):
        validate({"distill": {"method": "gan_real", "real_fraction": 0.0}})
    with pytest.raises(ConfigError, match="teacher.source=torchscript needs teacher.path"):
        validate({"teacher": {"source": "torchscript"}})


def test_overrides_parse_yaml_values():
    tree: dict = {}
    apply_override(tree, "distill.lr=1e-3")
    apply_override(tree, "runtime.progress=false")
    apply_override(tree, "pipeline.node_selector={pool: gpu}")
    assert tree == {"distill": {"lr": 1e-3}, "runtime": {"progress": False},
                    "pipeline": {"node_selector": {"pool": "gpu"}}}
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_override(tree, "no-equals-sign")


def test_unknown_profile_names_the_known_ones(repo_root):
    with pytest.raises(ConfigError, match="known profiles: smoke"):
        load_params(repo_root / "params.yaml", profile="nope")


def test_components_revalidate_params_json():
    text = Params().to_json().replace('"lr_g":0.0002', '"lr_g":-5.0')
    with pytest.raises(ConfigError, match="gan.lr_g"):
        Params.from_json(text)


def test_cli_exits_2_before_any_stage_runs(repo_root, tmp_path):
    result = subprocess.run([sys.executable, "-m", "gandistill.cli", "run", "--local", "--runs-dir", str(tmp_path),
                             "--set", "teacher.epochz=3"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 2
    assert "did you mean 'teacher.epochs'" in result.stderr
    assert not (tmp_path / "kfp").exists()  # nothing ran, nothing written
