"""params.yaml schema: validation, overrides, profiles, the CLI's exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gandistill import stage_params
from gandistill.config import Params, load_params, validate
from gandistill.errors import ConfigError
from gandistill.params_text import apply_override


def test_defaults_and_repo_params_are_valid(repo_root):
    assert Params().distill.method == "gan"
    params = load_params(repo_root / "params.yaml")
    assert params.teacher.arch == params.distill.student_arch == "auto"  # by the data: gandistill.archs
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


@pytest.mark.parametrize("value", ["inf", "-inf", ".inf", "nan", ".nan", "NaN"])
def test_non_finite_numbers_are_refused_naming_the_key(value):
    """`inf` passed the lower-bound-only check (gan.fm_weight ≥ 0) and NaN read as 'should be ≤ 10':
    every float key is now finite or refused, by name."""
    with pytest.raises(ConfigError) as err:
        load_params(None, [f"gan.fm_weight={value}", f"distill.lr={value}"])
    assert "gan.fm_weight: Input should be a finite number" in str(err.value)
    assert "distill.lr: Input should be a finite number" in str(err.value)


def test_duplicate_keys_and_sections_are_refused_with_their_lines(tmp_path):
    file = tmp_path / "dup.yaml"
    file.write_text("distill:\n  steps: 3\ngan:\n  steps: 4\ndistill:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_params(file)
    message = str(err.value)
    assert "distill: given twice (lines 1 and 5)" in message and "distill.lr: given twice (lines 6 and 7)" in message
    assert str(file) in message and "gan" not in message.replace("given", "")
    with pytest.raises(ConfigError, match="a: given twice"):
        load_params(None, ["pipeline.node_selector={a: x, a: y}"])
    file.write_text("distill:\n  steps: 3\ngan:\n  steps: 4\n")  # the same key in two sections is fine
    assert load_params(file).distill.steps == 3


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
        stage_params.load(text, "train_gan")  # what the task of train_gan does with its params_json
    with pytest.raises(ConfigError, match="not valid JSON"):
        stage_params.load("{", "train_gan")


def test_cli_exits_2_before_any_stage_runs(repo_root, tmp_path):
    result = subprocess.run([sys.executable, "-m", "gandistill", "run", "--local", "--runs-dir", str(tmp_path),
                             "--set", "teacher.epochz=3"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 2
    assert "did you mean 'teacher.epochs'" in result.stderr
    assert not (tmp_path / "kfp").exists()  # nothing ran, nothing written


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: schema {va!r} vs params.yaml {vb!r}")
    return out


def test_params_yaml_equals_the_schema_defaults(repo_root):
    """One source of truth: the shipped params.yaml holds exactly the built-in defaults, so a
    partial params file (or none) runs with the same settings as `make run`."""
    drift = _differences(Params().model_dump(), load_params(repo_root / "params.yaml").model_dump())
    assert not drift, "params.yaml and gandistill/config.py disagree:\n" + "\n".join(drift)


def test_a_partial_params_file_layers_over_the_defaults(tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text("distill:\n  steps: 123\n")
    params = load_params(partial)
    assert params.distill.steps == 123
    expected = Params().model_dump()
    expected["distill"]["steps"] = 123
    assert params.model_dump() == expected  # EMA, hard mining, … all as in a default run


def test_params_command_prints_what_run_would_use(repo_root, tmp_path):
    import yaml

    partial = tmp_path / "partial.yaml"
    partial.write_text("gan:\n  steps: 77\n")
    result = subprocess.run([sys.executable, "-m", "gandistill", "params", "--params", str(partial), "--profile",
                             "smoke", "--set", "distill.lr=0.01"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed == load_params(partial, ["distill.lr=0.01"], "smoke").model_dump()
    assert printed["gan"]["steps"] == 30 and printed["distill"]["lr"] == 0.01  # profile beats file, --set beats both


def test_setting_a_profile_key_says_how_profiles_work(repo_root):
    with pytest.raises(ConfigError, match="profiles are chosen with --profile NAME"):
        load_params(repo_root / "params.yaml", ["profiles.smoke.distill.eval_every=5"])


def test_a_params_file_can_add_its_own_profile(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("profiles:\n  quick:\n    distill.steps: 9\n")
    assert load_params(file, profile="quick").distill.steps == 9
    assert load_params(file, profile="smoke").distill.steps == 40  # built-in profiles still there


def test_a_key_that_takes_a_value_or_auto_names_its_path_and_both_choices():
    with pytest.raises(ConfigError) as err:
        validate({"gan": {"teacher_weight": "much", "augment": ["blur"]}})
    message = str(err.value)
    assert "gan.teacher_weight: Input should be a valid number" in message
    assert "gan.teacher_weight: Input should be 'auto'" in message
    assert "gan.augment.0: Input should be 'color', 'translation' or 'cutout' (got 'blur')" in message
    assert "constrained" not in message and "literal[" not in message  # pydantic's tags, not params keys
