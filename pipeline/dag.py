"""The DAG, built from params and the stage records: which stages run follows from the method.

check ─► prepare_data ─► train_teacher ─► train_gan ─► distill ─► evaluate ─► export ─► gate ─┬► promote (champion)
                                                                                             └► promote (challenger)
Each stage is one task added from its record (gandistill.stage_records): its inputs are the
upstream outputs the record names, an optional input only when that stage is in the DAG (the
record's `in_dag`: train_gan only for methods that distill from the trained cGAN — data_free must
never train a GAN on real data; train_translator only for cross-domain methods). Two shapes are the
DAG's own: baseline students — those a method's record names (cyclegan: target_kd,
target_supervised) plus `evaluate.baselines` — fan out as one more distill task per method
(dsl.ParallelFor over the list, known at compile time), collected into evaluate; and promote runs
in one branch of the read-only gate.

What a task receives is what its kfp cache key is made of (input values, upstream artifacts,
image and command). So each task receives only the params its stage reads (its record's `reads`),
compiled in as its `params_json` constant, and the typed run-time knobs among them: `seed`,
`gan_steps`, `distill_steps` (pipeline parameters whose defaults are the compiled params; set them
per run in the KFP UI or a recurring run) and prepare_data's `data_rev`. A new promote.min_accuracy
changes the inputs of promote_gate and promote only (the gate never caches; one promote branch
runs: 2 executions, not 9); a new distill_steps re-runs distill, evaluate, export and promote while
prepare_data, the teacher and the GAN stay cached. The params were validated whole at compile time;
check_params, the first task, checks the run's knobs (inputs: the knobs alone, so it stays cached
while they do), and every stage validates its own keys. `distill.method` shapes the DAG, so it is
fixed when the pipeline is compiled.
"""

# No `from __future__ import annotations`: kfp reads the pipeline signature's types at runtime.

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import gandistill_components
from gandistill_pipeline import kubernetes
from kfp import dsl

from gandistill import methods, stage_params, stage_records
from gandistill.config import Params
from gandistill.launch import check_batch_split, torchrun_command

PIPELINE_NAME = "gandistill"


class Tasks:
    """Adds a stage's task from its record, wired to the outputs of the tasks added before it."""

    def __init__(self, params: Params, comps: SimpleNamespace, arguments: dict[str, Any], nproc: int | None,
                 retries: int):
        self.params, self.comps, self.arguments, self.nproc, self.retries = params, comps, arguments, nproc, retries
        self.produced: dict[str, Any] = {}  # "<stage>.<output>" -> the output feeding later tasks
        self.first: Any = None  # check_params: a task with no upstream artifact waits for it

    def add(self, name: str, skip: tuple[str, ...] = (), **values: Any) -> Any:
        """The task of stage `name`; `values`: its per-task inputs (distill's method); `skip`: optional
        inputs it must not get even when produced (a baseline student's translator)."""
        stage = stage_records.get(name)
        kwargs = {"params_json": stage_params.stage_json(self.params, name),
                  **{arg: self.arguments[arg] for arg in ("parent_run_id", *stage.knobs, *stage.pipeline_inputs)},
                  **values}
        kwargs |= {arg: self.produced[source] for arg, source in stage.inputs.items()}
        # kfp refuses an explicit None for an optional artifact: pass it only when it exists.
        kwargs |= {arg: self.produced[source] for arg, source in stage.optional_inputs.items()
                   if source in self.produced and arg not in skip}
        if stage.data_parallel:  # compiled into the task: what its pod runs
            processes = self.nproc or kubernetes.processes(self.params, name)
            check_batch_split(self.params, name, processes)
            kwargs["launch"] = torchrun_command(processes)
        task = getattr(self.comps, name)(**kwargs).set_display_name(name)
        if not stage.inputs and self.first is not None:
            task.after(self.first)
        if not stage.cached:  # depends on state outside its inputs (the registry's champion)
            task.set_caching_options(False)
        kubernetes.configure(task, stage.resources_name, self.params)
        if stage.trains:
            kubernetes.make_resumable(task, self.params, self.retries)
        if stage.output is not None:
            self.produced[f"{name}.{stage.output}"] = task.outputs[stage.output]
        return task


def build_pipeline(params: Params, nproc: int | None = None, retries: int | None = None) -> Callable[..., Any]:
    """`nproc`: worker processes for every training stage (`gandistill run --local --nproc`);
    default: one per accelerator in pipeline.resources.<stage> (torchrun when more than one).
    `retries`: KFP retries of a failed training task, default pipeline.retries (a pre-empted
    pod resumes from pipeline.checkpoint_root); `run --local` passes 0 — a local failure is a
    bug or bad input far more often than a lost node, and re-running the command resumes."""
    retries = params.pipeline.retries if retries is None else retries
    comps = gandistill_components.build(params.pipeline.image)
    method = params.distill.method
    # students trained only for the report's side-by-side: the record's own, then the user's
    baselines = list(dict.fromkeys([*methods.get(method).baselines, *params.evaluate.baselines]))
    run = [methods.get(m) for m in [method, *baselines]]
    plan = [stage for stage in stage_records.STAGES.values() if stage.in_dag(run)]

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Teacher → conditional GAN → distilled student → evaluate → export → promote")
    def gandistill_pipeline(parent_run_id: str = "", data_rev: str = "", seed: int = params.seed,
                            gan_steps: int = params.gan.steps, distill_steps: int = params.distill.steps):
        knobs = {"seed": seed, "gan_steps": gan_steps, "distill_steps": distill_steps}
        tasks = Tasks(params, comps, {"parent_run_id": parent_run_id, "data_rev": data_rev, **knobs}, nproc, retries)
        # data_rev (a DVC/git commit SHA) is an input of prepare_data, so it keys kfp's cache to the data
        # version: same params + same data revision = cache hit; new data re-runs prepare_data and,
        # through its new artifact, everything downstream. (submit disables caching when no revision is known.)
        tasks.first = comps.check_params(**knobs).set_display_name("check_params")
        kubernetes.configure(tasks.first, "check_params", params)
        for stage in plan:
            if stage.name == "promote":
                _gated_promote(tasks)
            elif stage.name != "promote_gate":
                tasks.add(stage.name, **{arg: _value(params, key) for arg, key in stage.task_inputs.items()})
            if stage.name == "distill" and baselines:
                _fan_out_baselines(tasks, baselines)

    return gandistill_pipeline


def _value(params: Params, key: str) -> Any:
    section, _, field = key.partition(".")
    return getattr(getattr(params, section), field) if field else getattr(params, section)


def _fan_out_baselines(tasks: Tasks, baselines: list[str]) -> None:
    """One more distill task per baseline method, on the same data and teacher (and the trained cGAN's
    generator: never a translator, a baseline learns without one), collected for evaluate."""
    own = tasks.produced["distill.student"]
    with dsl.ParallelFor(baselines, name="baselines") as baseline_method:
        baseline = tasks.add("distill", skip=("translator",), method=baseline_method)
    tasks.produced["distill.student"] = own  # evaluate, export and promote take the run's own student
    tasks.produced["distill.baselines"] = dsl.Collected(baseline.outputs["student"])


def _gated_promote(tasks: Tasks) -> None:
    """The quality gate is its own (read-only) step so the DAG shows which branch was taken;
    promote re-applies the same gate when it writes, which keeps concurrent runs honest."""
    gate = tasks.add("promote_gate")
    with dsl.If(gate.output == True, name="gate-passed"):  # noqa: E712 (kfp condition, not Python)
        tasks.add("promote")
    with dsl.Else(name="gate-failed"):
        tasks.add("promote")


def compile_pipeline(params: Params, output: str, nproc: int | None = None) -> None:
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(params, nproc), output)
