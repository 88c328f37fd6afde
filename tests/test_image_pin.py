"""The component image is pinned to the code it runs (pipeline/image.py): compile, submit and
trainer-manifest use this working tree's content tag or a digest and refuse any other tag, so
a code change always changes every task's cache key, and a params or docs change does not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from gandistill_pipeline import image
from gandistill_pipeline.dag import compile_pipeline

from gandistill.config import load_params
from gandistill.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _tree(tmp_path: Path, name: str) -> Path:
    """A git working tree holding what the image is built from, as in this checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                             *image.CONTENT, "params.yaml", "README.md"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    tree = tmp_path / name
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, tree / rel)
    subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
    return tree


def test_the_build_script_and_the_compiler_compute_the_same_content_tag() -> None:
    out = subprocess.run(["bash", "scripts/image.sh", "content-tag"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == image.content_tag(ROOT) and out.startswith("c-") and len(out) == 14
    tagged = subprocess.run(["bash", "scripts/image.sh", "tag"], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "IMAGE": "reg.example:5000/ml/gd"}, check=True)
    assert tagged.stdout.strip() == f"reg.example:5000/ml/gd:{out}"  # what `make image IMAGE=reg…/gd` builds


def test_only_this_trees_tag_or_a_digest_is_accepted() -> None:
    want = image.content_tag(ROOT)
    assert image.pinned("reg.example:5000/ml/gd", ROOT) == f"reg.example:5000/ml/gd:{want}"
    assert image.pinned(f"reg.example/gd:{want}-cuda", ROOT) == f"reg.example/gd:{want}-cuda"
    assert image.pinned("reg.example/gd:cuda", ROOT) == f"reg.example/gd:{want}-cuda"  # the variant `CUDA=1` builds
    digest = "reg.example/gd@sha256:" + "ab" * 32
    assert image.pinned(digest, ROOT) == digest and image.pinned(digest, None) == digest
    fix = rf"does not match this working tree.*{want}.*make image IMAGE=reg.example/gd"
    with pytest.raises(ConfigError, match=fix):
        image.pinned("reg.example/gd:0.1.0", ROOT)  # a mutable tag: old code behind the same name
    with pytest.raises(ConfigError, match="outside a gandistill checkout.*@sha256"):
        image.pinned("reg.example/gd", None)


def _images_and_pull_policy(spec_file: Path) -> tuple[dict[str, str], set[str]]:
    spec, platform = yaml.safe_load_all(spec_file.read_text())
    images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
    policies = {e.get("imagePullPolicy") for e in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
                .values()}
    return images, policies


def test_a_code_change_changes_every_tasks_cache_key_and_a_params_or_docs_change_none(tmp_path: Path) -> None:
    """kfp's cache key (GenerateCacheKey) holds each task's container image and command. One
    image carries every stage's code, so a change to any of it moves every task to a new image
    reference, hence a new key — all stages re-run, by design (the stages share the library:
    a per-stage code identity would differ for nearly every change). Params and docs are not
    in the image's content: the reference, and every key, stay."""
    base, code, docs = _tree(tmp_path, "base"), _tree(tmp_path, "code"), _tree(tmp_path, "docs")
    with open(code / "gandistill" / "losses.py", "a") as handle:
        handle.write("\n# a code change\n")
    (docs / "README.md").write_text("changed\n")
    (docs / "params.yaml").write_text((docs / "params.yaml").read_text().replace("seed: 0", "seed: 1"))
    params = load_params(ROOT / "params.yaml", ["pipeline.image=reg.example/gd"])
    compiled = {}
    for name, tree in (("base", base), ("code", code), ("docs", docs)):
        compile_pipeline(image.pin(params, tree), str(tmp_path / f"{name}.yaml"))
        compiled[name] = _images_and_pull_policy(tmp_path / f"{name}.yaml")
    (base_images, policies), (code_images, _), (docs_images, _) = compiled["base"], compiled["code"], compiled["docs"]
    assert len(set(base_images.values())) == 1  # one image for every task
    assert base_images.keys() == code_images.keys()
    assert all(base_images[task] != code_images[task] for task in base_images)  # every key changes
    assert docs_images == base_images  # params.yaml / README.md are not the image's content
    assert policies == {"IfNotPresent"}  # a content tag never names two images: a node's copy is right


def test_compile_refuses_a_stale_tag_and_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gandistill_pipeline.cli import main as cli

    code = cli(["compile", "--params", str(ROOT / "params.yaml"), "--output", str(tmp_path / "p.yaml"),
                "--set", "pipeline.image=reg.example/gd:latest"])
    assert code == 2 and not (tmp_path / "p.yaml").exists()
    assert "does not match this working tree" in capsys.readouterr().err
