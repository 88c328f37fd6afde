"""One record per pipeline stage: what it reads, what it takes and makes, how it runs.

Torch-free on purpose, like `gandistill.methods`: the DAG compiler, the components' entry point,
the local runner, the console, the launcher and the params schema's resources list are built
from these records, and compiling the pipeline must not import torch. Adding a stage means its
record here, its module under `gandistill/stages` (a `run(params, <input>_dir…, out_dir, tracker)`)
and its component under `components/` (the typed kfp signature; its body calls
`gandistill.stages.entry.run_task`) — plus its params section if it has one (config.py,
params.yaml). tests/test_stage_records.py checks that every record, stage function and component
agree, and adds a toy stage from its record alone and runs it through kfp.local.

Wiring: a stage's `inputs` name the component's input artifacts and the upstream output each
comes from (`"<stage>.<output>"`); an `optional_inputs` entry is passed only when that upstream
stage is in the DAG (the trained cGAN's generator for a method that distills from it). The
stage function receives an artifact `x` as `x_dir`, its `output` as `out_dir`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gandistill import methods

# Typed pipeline parameters for what people change per run (KFP UI, recurring runs), and the params
# key each sets. A task receives the ones its stage reads, nothing else, so a new distill_steps
# re-runs distill and what follows while the teacher and the GAN stay cached.
KNOBS: dict[str, str] = {"seed": "seed", "gan_steps": "gan.steps", "distill_steps": "distill.steps"}

# The parent MLflow run's tag (stages/entry.py) names the method, so every stage reads it; the
# method also shapes the DAG, so it never changes for one compiled pipeline.
_METHOD = ("distill.method",)
# archs.resolve / archs.check_fit: 'auto' architectures against the data's shape.
_ARCHS = ("teacher.arch", "teacher.source", "distill.student_arch")
# Training stages: seed, the Runtime (device, threads, precision, collectives, checkpoints,
# retries, progress) and the data section (their checkpoint fingerprint).
_TRAINING = ("seed", "runtime", "data")

Headline = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # the params keys it reads: a section ("data"), "section.key" or "seed"
    headline: Headline  # the console's one line for its result
    inputs: dict[str, str] = field(default_factory=dict)  # component input artifact -> "<stage>.<output>"
    optional_inputs: dict[str, str] = field(default_factory=dict)  # passed when that stage is in the DAG
    output: str | None = None  # the output artifact that holds result.json (None: the task returns a value)
    task_inputs: dict[str, str] = field(default_factory=dict)  # per-task value -> the params key it sets
    pipeline_inputs: tuple[str, ...] = ()  # pipeline parameters besides the knobs (prepare_data: data_rev)
    trains: bool = False  # a training stage: system metrics, checkpoints on pipeline.checkpoint_root, KFP retries
    batch_key: str | None = None  # the global batch it splits over data-parallel processes (torchrun)
    cached: bool = True  # False: depends on state outside its inputs (the registry's champion)
    closes_run: bool = False  # a submitted run's last stage closes the MLflow parent run the stages share
    on_parent: dict[str, str] = field(default_factory=dict)  # result key -> metric on the pipeline's MLflow run
    function: str = ""  # "module:function" of its stage function; default gandistill.stages.<name>:run
    component: str = ""  # "module:function" of its kfp component; default gandistill_components.<name>:<name>
    resources: str = ""  # the pipeline.resources entry that sizes its pod; default <name>
    in_dag: Callable[[list[methods.Method]], bool] = lambda run: True  # (the run's method, *its baselines)

    @property
    def data_parallel(self) -> bool:
        return self.batch_key is not None

    @property
    def function_path(self) -> tuple[str, str]:
        module, _, function = (self.function or f"gandistill.stages.{self.name}:run").partition(":")
        return module, function

    @property
    def component_path(self) -> tuple[str, str]:
        module, _, function = (self.component or f"gandistill_components.{self.name}:{self.name}").partition(":")
        return module, function

    @property
    def resources_name(self) -> str:
        return self.resources or self.name

    @property
    def knobs(self) -> tuple[str, ...]:
        """The typed pipeline parameters its task receives: those whose params key it reads."""
        return tuple(name for name, key in KNOBS.items() if covers(self.reads, key))


def covers(reads: tuple[str, ...], key: str) -> bool:
    """Whether a stage reading `reads` reads `key` (itself or its whole section)."""
    return key in reads or key.split(".")[0] in reads


# -- headlines (the console's line per finished stage) ---------------------------------------

def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, int | float) else "—"


def _num(value: Any, spec: str = ".3g") -> str:
    return format(value, spec) if isinstance(value, int | float) else "—"


def _prepared(r: dict[str, Any]) -> str:
    counts = r.get("counts", {})
    return (f"train {counts.get('train', 0):,} / val {counts.get('val', 0):,} / test {counts.get('test', 0):,}, "
            f"{r.get('num_classes', '?')} classes")


def _student(r: dict[str, Any]) -> str:
    seen = r.get("real_images_seen_by_student")
    fallback = f" [learned as {r['learned_as']}: the translator's class guard tripped]" if r.get("learned_as") else ""
    return (f"{r.get('method', '')} → {r.get('arch', '')} test {_pct(r.get('test_acc'))} "
            f"(val {_pct(r.get('val_acc'))}), {'?' if seen is None else f'{seen:,}'} real images seen{fallback}")


def _translator(r: dict[str, Any]) -> str:
    """Class kept (the teacher's reading of translated source images), the translator's own second
    check, and the class guard's verdict (gandistill.class_guard)."""
    guard = r.get("guard") or {}
    kept = r.get("final_class_preservation", r.get("final_semantic_acc"))
    second = (f"task/teacher agreement on target {_pct(r.get('final_teacher_target_agreement'))}"
              if r.get("translator") == "pixelda" else f"cycle acc {_pct(r.get('final_cycle_acc'))}")
    line = f"class kept {_pct(kept)}, {second}, coverage {_num(r.get('final_coverage'))}"
    if guard.get("verdict") == "tripped":
        line += (f" — GUARD TRIPPED at step {guard.get('step')}: class kept {_pct(guard.get('class_kept'))} < teacher "
                 f"on raw target ~{_pct(guard.get('teacher_on_target_estimate'))}"
                 + (f", student falls back to {guard['fallback']}" if guard.get("fallback") else ""))
    return line


def _exported(r: dict[str, Any]) -> str:
    line = (f"ONNX max |Δ| {_num(r.get('onnx_max_abs_diff'), '.2g')}, "
            f".pt2 max |Δ| {_num(r.get('pt2_max_abs_diff'), '.2g')}")
    if r.get("int8_test_acc") is not None:
        line += (f", INT8 test {_pct(r['int8_test_acc'])} "
                 f"(drop {_num(100 * r.get('int8_acc_drop', float('nan')), '.2f')} points)")
    return line


# -- the stages, in pipeline order -----------------------------------------------------------

_DATA = {"data": "prepare_data.data"}
_TEACHER = {"teacher": "train_teacher.teacher"}
_GENERATOR = {"generator": "train_gan.generator"}
_TRANSLATOR = {"translator": "train_translator.translator"}

STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("prepare_data", (*_METHOD, "seed", "data", *_ARCHS), _prepared, output="data",
          pipeline_inputs=("data_rev",)),
    # distill.*: an imported TorchScript teacher without features fails early when distill wants them.
    Stage("train_teacher", (*_METHOD, *_TRAINING, "teacher", "distill.student_arch", "distill.hint_weight",
                            "distill.attention_weight", "distill.rkd_distance_weight", "distill.rkd_angle_weight"),
          lambda r: f"{r.get('arch', '')} test {_pct(r.get('test_acc'))} (val {_pct(r.get('val_acc'))})",
          inputs=_DATA, output="teacher", trains=True, batch_key="teacher.batch_size",
          on_parent={"test_acc": "teacher_test_acc", "val_acc": "teacher_val_acc"}),
    Stage("train_gan", (*_METHOD, *_TRAINING, "gan"),
          lambda r: (f"FID {_num(r.get('selected_fid'), '.1f')}, coverage {_num(r.get('selected_coverage'))}, "
                     f"agreement {_pct(r.get('selected_agreement'))} (step {r.get('best_step')})"),
          inputs=_DATA | _TEACHER, output="generator", trains=True, batch_key="gan.batch_size",
          in_dag=lambda run: any(m.needs_trained_gan for m in run)),
    Stage("train_translator", (*_METHOD, *_TRAINING, "translator"), _translator,
          inputs=_DATA | _TEACHER, output="translator", trains=True, in_dag=lambda run: run[0].needs_translator),
    Stage("distill", (*_TRAINING, "distill"), _student,
          inputs=_DATA | _TEACHER, optional_inputs=_GENERATOR | _TRANSLATOR, output="student",
          task_inputs={"method": "distill.method"}, trains=True, batch_key="distill.batch_size",
          on_parent={"test_acc": "student_test_acc", "val_acc": "student_val_acc"}),
    Stage("evaluate", (*_METHOD, "seed", "evaluate", "runtime.threads",  # INT8: built as export will, then timed
                       "export.int8", "export.int8_calibration", "export.int8_calibration_samples",
                       "export.onnx_opset"),
          lambda r: (f"student {_pct(r.get('metrics', {}).get('student_test_acc'))} vs teacher "
                     f"{_pct(r.get('metrics', {}).get('teacher_test_acc'))}, "
                     f"agreement {_pct(r.get('metrics', {}).get('agreement'))}"),
          inputs=_DATA | _TEACHER | {"student": "distill.student"},
          optional_inputs=_GENERATOR | _TRANSLATOR | {"baselines": "distill.baselines"}, output="evaluation"),
    # export's model card names the student's settings and the model; promote re-checks parity.
    Stage("export", (*_METHOD, "seed", "export", "promote.model_name", "distill.temperature", "distill.alpha",
                     "distill.steps", "distill.batch_size", "distill.lr"), _exported,
          inputs=_DATA | {"student": "distill.student", "evaluation": "evaluate.evaluation"},
          optional_inputs=_GENERATOR, output="exported"),
    Stage("promote_gate", (*_METHOD, "promote"),
          lambda r: ("passed" if r.get("passed") else "failed") + (f": {r['reason']}" if r.get("reason") else ""),
          inputs={"evaluation": "evaluate.evaluation"}, cached=False, function="gandistill.stages.promote:run_gate",
          component="gandistill_components.promote:promote_gate", resources="promote"),
    Stage("promote", (*_METHOD, "promote", "export.parity_atol"),
          lambda r: f"{r.get('model_name', '')} v{r.get('version')} @{r.get('alias')}",
          inputs={"exported": "export.exported", "evaluation": "evaluate.evaluation"}, cached=False, closes_run=True),
)}


def get(name: str) -> Stage:
    """The record of stage `name`; a task's run name (distill_gan: a stage and its method) finds its stage."""
    if name in STAGES:
        return STAGES[name]
    for stage in STAGES.values():
        if name.startswith(f"{stage.name}_") and stage.task_inputs:
            return stage
    raise KeyError(f"{name!r} is not a pipeline stage (stages: {', '.join(STAGES)})")


def headline(name: str, result: dict[str, Any]) -> str:
    """The one number (or two) that says how a task went, from its result ("" when unknown)."""
    try:
        stage = get(name)
    except KeyError:
        return ""
    return stage.headline(result) if isinstance(result, dict) else ""


def trained() -> tuple[str, ...]:
    return tuple(name for name, stage in STAGES.items() if stage.trains)


def data_parallel() -> tuple[str, ...]:
    return tuple(name for name, stage in STAGES.items() if stage.data_parallel)


def with_resources() -> tuple[str, ...]:
    """The stages `pipeline.resources` may size (their pods)."""
    return tuple(dict.fromkeys(stage.resources_name for stage in STAGES.values()))
