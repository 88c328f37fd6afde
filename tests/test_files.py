"""The shared file helpers (gandistill/files.py) and the library's import graph."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gandistill.data.dataset import Split, load_split, save_dataset
from gandistill.files import atomic_write_text, file_hash, staged_dir

ROOT = Path(__file__).resolve().parents[1]


def test_file_hash_streams_the_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several read blocks plus a tail
    (tmp_path / "f").write_bytes(data)
    assert file_hash(tmp_path / "f") == hashlib.md5(data).hexdigest()
    assert file_hash(tmp_path / "f", "sha256") == hashlib.sha256(data).hexdigest()


def test_staged_dir_replaces_the_folder_as_a_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp != out
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").is_file()  # nothing visible until the build finished
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or old copy left behind


def test_a_failed_build_leaves_the_old_folder_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="half way"), staged_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("half way")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "fresh"):
        raise RuntimeError
    assert not (tmp_path / "fresh").exists()


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a" / "r.json", "{}")
    atomic_write_text(tmp_path / "a" / "r.json", '{"x": 1}')
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]
    assert (tmp_path / "a" / "r.json").read_text() == '{"x": 1}'


def test_a_prepared_dataset_has_exactly_train_val_test(tmp_path: Path, tiny_dataset: Path) -> None:
    split = load_split(tiny_dataset, "train")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        load_split(tiny_dataset, "valid")
    from gandistill.data.dataset import load_meta

    with pytest.raises(ValueError, match="train, val, test"):
        save_dataset(tmp_path / "d", {"train": split, "test": Split(split.x[:2], split.y[:2])},
                     load_meta(tiny_dataset))


def _library_imports() -> dict[str, set[str]]:
    """gandistill module -> the gandistill modules it imports (anywhere in the file)."""
    files = {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
             for f in (ROOT / "gandistill").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, file in files.items():
        deps = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gandistill"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in files else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("gandistill")}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def test_the_library_has_no_import_cycles() -> None:
    """A cycle (like data.sources ↔ data.dvc_source once was) forces lazy imports and makes
    the import order matter; function-level imports count too."""
    graph = _library_imports()
    assert "gandistill.data.dvc_source" in graph  # the walk really sees the modules
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


def test_only_stages_import_stages() -> None:
    """The stages sit on top of the library: a library module that reached into a stage (a helper
    kept in a stage's module) would make the stage a dependency of what it is built from."""
    graph = _library_imports()
    assert "gandistill.stages.distill" in graph
    upward = sorted((module, dep) for module, deps in graph.items() for dep in deps
                    if dep.startswith("gandistill.stages") and not module.startswith("gandistill.stages"))
    assert upward == []


def test_functions_and_modules_stay_readable_in_size() -> None:
    """No function over 80 lines and no module over 600 in the library, the pipeline layer and the
    components: a longer `run` hides its table of contents, a longer module more than one job."""
    too_long = []
    for folder in ("gandistill", "pipeline", "components"):
        for file in sorted((ROOT / folder).rglob("*.py")):
            source = file.read_text()
            name = file.relative_to(ROOT)
            if len(source.splitlines()) > 600:
                too_long.append(f"{name}: {len(source.splitlines())} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                    if node.end_lineno - start + 1 > 80:
                        too_long.append(f"{name}:{start} {node.name}: {node.end_lineno - start + 1} lines")
    assert too_long == []


def test_the_library_never_imports_kfp_or_the_pipeline_layer() -> None:
    code = ("import sys, pkgutil, importlib, gandistill\n"
            "for m in pkgutil.walk_packages(gandistill.__path__, 'gandistill.'):\n"
            "    if m.name != 'gandistill.__main__': importlib.import_module(m.name)\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('kfp', 'gandistill_pipeline', "
            "'gandistill_components'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)
