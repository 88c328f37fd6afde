"""The DAG, built from params: which stages run follows from the distillation method.

prepare_data ─► train_teacher ─► train_gan ─► distill ─► evaluate ─► export ─► gate ─┬► promote (champion)
                                                                                  └► promote (challenger)
(train_gan only for methods that distill from the trained cGAN; data_free/dafl/kd/scratch
skip it — data_free must never train a GAN on real data. train_translator only for cross-domain
methods (cyclegan).) Baseline students — those a method's record names (cyclegan: target_kd,
target_supervised) plus `evaluate.baselines` — fan out as one more distill task per method
(dsl.ParallelFor over the list, known at compile time), collected into evaluate.

What a task receives is what its kfp cache key is made of (input values, upstream artifacts,
image and command). So each task receives only the params its stage reads
(gandistill.stage_params.STAGE_PARAMS), compiled in as its `params_json` constant, and the typed
run-time knobs among them: `seed`, `gan_steps`, `distill_steps` (pipeline parameters whose defaults
are the compiled params; set them per run in the KFP UI or a recurring run) and prepare_data's
`data_rev`. A new promote.min_accuracy changes the inputs of promote_gate and promote only (the
gate never caches; one promote branch runs: 2 executions, not 9); a new distill_steps re-runs
distill, evaluate, export and promote while prepare_data, the teacher and the GAN stay cached.
The params were validated whole at compile time; check_params, the first task, checks the run's
knobs (inputs: the knobs alone, so it stays cached while they do), and every stage validates its
own keys. `distill.method` shapes the DAG, so it is fixed when the pipeline is compiled.
"""

# No `from __future__ import annotations`: kfp reads the pipeline signature's types at runtime.

from collections.abc import Callable
from typing import Any

import gandistill_components
from gandistill_pipeline import kubernetes
from kfp import dsl

from gandistill import methods, stage_params
from gandistill.config import Params
from gandistill.launch import check_batch_split, torchrun_command

PIPELINE_NAME = "gandistill"


def build_pipeline(params: Params, nproc: int | None = None, retries: int | None = None) -> Callable[..., Any]:
    """`nproc`: worker processes for every training stage (`gandistill run --local --nproc`);
    default: one per accelerator in pipeline.resources.<stage> (torchrun when more than one).
    `retries`: KFP retries of a failed training task, default pipeline.retries (a pre-empted
    pod resumes from pipeline.checkpoint_root); `run --local` passes 0 — a local failure is a
    bug or bad input far more often than a lost node, and re-running the command resumes."""
    retries = params.pipeline.retries if retries is None else retries
    comps = gandistill_components.build(params.pipeline.image)

    def launch_command(stage: str) -> str:  # compiled into the task: what its pod runs
        processes = nproc or kubernetes.processes(params, stage)
        check_batch_split(params, stage, processes)
        return torchrun_command(processes)

    method = params.distill.method
    record = methods.get(method)
    # students trained only for the report's side-by-side: the record's own, then the user's
    baselines = list(dict.fromkeys([*record.baselines, *params.evaluate.baselines]))
    needs_gan = any(methods.get(m).needs_trained_gan for m in [method, *baselines])

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Teacher → conditional GAN → distilled student → evaluate → export → promote")
    def gandistill_pipeline(parent_run_id: str = "", data_rev: str = "", seed: int = params.seed,
                            gan_steps: int = params.gan.steps, distill_steps: int = params.distill.steps):
        knobs = {"seed": seed, "gan_steps": gan_steps, "distill_steps": distill_steps}

        def given(stage: str) -> dict[str, Any]:  # a task's params: the keys its stage reads, its knobs
            return {"params_json": stage_params.stage_json(params, stage), "parent_run_id": parent_run_id,
                    **{name: knobs[name] for name in stage_params.knobs(stage, method)}}

        check = comps.check_params(**knobs).set_display_name("check_params")
        # data_rev (a DVC/git commit SHA) keys kfp's cache to the data version, not a branch name.
        # data_rev is an input of prepare_data, so it is part of the task's cache key: same
        # params + same data revision = cache hit; new data re-runs prepare_data and, through its
        # new artifact, everything downstream. (submit disables caching when no revision is known.)
        prep = comps.prepare_data(**given("prepare_data"), data_rev=data_rev).set_display_name("prepare_data")
        prep.after(check)
        teacher = comps.train_teacher(**given("train_teacher"), data=prep.outputs["data"],
                                      launch=launch_command("train_teacher"))
        generator = gan = translator = baseline = None
        if needs_gan:
            gan = comps.train_gan(**given("train_gan"), data=prep.outputs["data"], teacher=teacher.outputs["teacher"],
                                  launch=launch_command("train_gan"))
            generator = gan.outputs["generator"]
            kubernetes.configure(gan, "train_gan", params)
        # kfp refuses an explicit None for an optional artifact: pass it only when it exists.
        with_generator = {"generator": generator} if generator is not None else {}
        with_translator = {}
        if record.needs_translator:  # cross-domain transfer: the CycleGAN between source and target
            translator = comps.train_translator(**given("train_translator"), data=prep.outputs["data"],
                                                 teacher=teacher.outputs["teacher"])
            kubernetes.configure(translator, "train_translator", params)
            with_translator = {"translator": translator.outputs["translator"]}
        student = comps.distill(**given("distill"), method=method, data=prep.outputs["data"],
                                teacher=teacher.outputs["teacher"], launch=launch_command("distill"),
                                **with_generator, **with_translator)
        compared = {}
        if baselines:  # known at compile time: the DAG is built from the params
            with dsl.ParallelFor(baselines, name="baselines") as baseline_method:
                baseline = comps.distill(**given("distill"), method=baseline_method, data=prep.outputs["data"],
                                         teacher=teacher.outputs["teacher"], launch=launch_command("distill"),
                                         **with_generator)
                kubernetes.configure(baseline, "distill", params)
            compared = {"baselines": dsl.Collected(baseline.outputs["student"])}
        evaluation = comps.evaluate(**given("evaluate"), data=prep.outputs["data"], teacher=teacher.outputs["teacher"],
                                    student=student.outputs["student"], **with_generator, **with_translator,
                                    **compared)
        exported = comps.export(**given("export"), data=prep.outputs["data"], student=student.outputs["student"],
                                evaluation=evaluation.outputs["evaluation"], **with_generator)
        # The quality gate is its own (read-only) step so the DAG shows which branch was taken;
        # promote re-applies the same gate when it writes, which keeps concurrent runs honest.
        gate = comps.promote_gate(**given("promote_gate"), evaluation=evaluation.outputs["evaluation"])
        gate.set_caching_options(False)  # depends on the registry's current champion
        with dsl.If(gate.output == True, name="gate-passed"):  # noqa: E712 (kfp condition, not Python)
            champion = comps.promote(**given("promote"), exported=exported.outputs["exported"],
                                     evaluation=evaluation.outputs["evaluation"])
        with dsl.Else(name="gate-failed"):
            challenger = comps.promote(**given("promote"), exported=exported.outputs["exported"],
                                       evaluation=evaluation.outputs["evaluation"])
        for task, stage in ((check, "check_params"), (prep, "prepare_data"), (teacher, "train_teacher"),
                            (student, "distill"), (evaluation, "evaluate"), (exported, "export"), (gate, "promote"),
                            (champion, "promote"), (challenger, "promote")):
            kubernetes.configure(task, stage, params)
        for training_task in (teacher, gan, translator, student, baseline):
            if training_task is not None:
                kubernetes.make_resumable(training_task, params, retries)

    return gandistill_pipeline


def compile_pipeline(params: Params, output: str, nproc: int | None = None) -> None:
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(params, nproc), output)
