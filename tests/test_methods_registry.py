"""One record per distillation method (gandistill.methods): the schema, the distill stage's
step functions, the DAG, the model card and the README read the same records."""

from __future__ import annotations

import json
import subprocess
import sys
import typing

from gandistill import methods
from gandistill.config import DistillParams


def test_schema_step_functions_and_records_name_the_same_methods():
    from gandistill.stages.distill import STEPS

    assert set(typing.get_args(DistillParams.model_fields["method"].annotation)) == set(methods.METHODS)
    assert set(STEPS) == set(methods.METHODS)


def test_readme_method_table_is_generated_from_the_records(repo_root):
    assert methods.markdown_table() in (repo_root / "README.md").read_text(), (
        "README's method table is stale: paste the output of `gandistill methods`")


def test_compiling_the_pipeline_does_not_import_torch(repo_root, tmp_path):
    code = ("import sys\nfrom gandistill.config import load_params\nfrom gandistill_pipeline.dag import "
            f"compile_pipeline\ncompile_pipeline(load_params(), {str(tmp_path / 'p.yaml')!r})\n"
            "assert 'torch' not in sys.modules, 'compiling imported torch'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dag_follows_the_record(repo_root, tmp_path):
    import yaml
    from gandistill_pipeline.dag import compile_pipeline

    from gandistill.config import load_params

    target = ["data.target_source=mnistm", "data.target_path=data/mnist"]
    for name, record in methods.METHODS.items():
        out = tmp_path / f"{name}.yaml"
        overrides = [f"distill.method={name}", *(target if record.domain == "target" else [])]
        compile_pipeline(load_params(repo_root / "params.yaml", overrides), str(out))
        spec = next(yaml.safe_load_all(out.read_text()))  # the pipeline spec; the platform spec follows
        tasks = spec["root"]["dag"]["tasks"]
        assert ("train-gan" in tasks) == record.needs_trained_gan, name
        assert ("train-translator" in tasks) == record.needs_translator, name
        # the main student, plus one distill per baseline the record names (fanned out by a ParallelFor)
        assert len([t for t in tasks if t.startswith("distill")]) == 1, name
        loops = [t for t in tasks.values() if t["taskInfo"]["name"] == "baselines"]
        fanned = json.loads(loops[0]["parameterIterator"]["items"]["raw"]) if loops else []
        assert fanned == list(record.baselines), name


def test_data_free_records_select_on_nothing_real():
    for record in methods.METHODS.values():
        if record.domain == "target":  # target labels never select: agreement with the teacher signal
            assert record.selection == ("val_acc" if record.needs_target_labels else "val_agreement")
            continue
        assert record.selection == ("final" if not record.real_data_anywhere else "val_acc")
        if not record.real_data_anywhere:
            assert record.real_images == "none" and not record.needs_trained_gan


def test_baselines_are_target_methods_that_need_no_translator():
    for record in methods.METHODS.values():
        for name in record.baselines:
            baseline = methods.get(name)
            assert baseline.domain == record.domain == "target" and not baseline.needs_translator
