"""Typed schema of params.yaml: one section per pipeline stage.

The same schema is read by the CLI, every kfp component and the tests, so a wrong key or
value fails once, early, with every offending key path listed (exit code 2), before any
stage runs. Profiles (e.g. `--profile smoke`) are named override sets stored in the
`profiles:` section of params.yaml; `--set section.key=value` overrides come last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from gandistill import stage_records
from gandistill.errors import ConfigError, ParamNotGiven
from gandistill.methods import METHOD_NAMES, METHODS
from gandistill.params_errors import describe_error
from gandistill.params_text import apply_override, load_yaml
from gandistill.profiles import BUILTIN_PROFILES

DEFAULT_PARAMS_FILE = "params.yaml"


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment.

    A stage works on a partial view (gandistill.stage_params): the keys it does not read are
    absent, and reading one raises ParamNotGiven instead of returning a default — a stage
    that needs a key its declaration lacks fails loudly, never with a silently wrong value."""

    # allow_inf_nan=False: a float must be finite — NaN or ±inf in a weight or a rate would only surface
    # as a failed training stage that never names the key.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __getattr__(self, name: str) -> Any:
        if name in type(self).model_fields:  # a field absent from this instance: withheld from the stage
            raise ParamNotGiven(f"params.{_path_of(type(self))}{name} was not given to this stage: "
                                "its record in gandistill/stage_records.py lists the params it reads; add the key "
                                "to the record's `reads`")
        return super().__getattr__(name)  # type: ignore[misc]

    def is_whole(self) -> bool:
        """False on a stage's partial view: some field (here or in a nested section) is withheld."""
        return self.__dict__.keys() >= type(self).model_fields.keys() and all(
            value.is_whole() for value in self.__dict__.values() if isinstance(value, Section))

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        self._refuse_partial("model_dump")
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        self._refuse_partial("model_dump_json")
        return super().model_dump_json(**kwargs)

    def _refuse_partial(self, what: str) -> None:
        # pydantic would silently leave the withheld keys out (a fingerprint or a logged
        # section that looks whole but is not): a partial view is never dumped.
        if not self.is_whole():
            raise ParamNotGiven(f"{what} of a stage's partial {type(self).__name__}: some keys were not given to "
                                "this stage (gandistill/stage_records.py); dump only what the stage declares")


DataSource = Literal["mnist", "mnistm", "idx", "npz", "imagefolder", "dvc"]


def _path_of(section: type[Section]) -> str:
    """'gan.' for GanParams, '' for Params: where a section sits in the params tree."""
    return next((f"{name}." for name, field in Params.model_fields.items() if field.annotation is section), "")


class DataParams(Section):
    # mnistm: the MNIST-M-style colour set built from the MNIST files in `path` (data/mnistm.py).
    source: DataSource = "mnist"
    path: str = "data/mnist"
    # Cross-domain transfer (distill.method=cyclegan): the target domain B, any source above. Its
    # labels are read only by the final report and the target-supervised baseline, never by the student.
    target_source: DataSource | None = None
    target_path: str | None = None
    # dvc source: repository (path or git URL) and revision holding `path`.
    dvc_repo: str | None = None
    dvc_rev: str | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="only when the source has no test split")
    resize: int | None = Field(None, ge=8, le=64)
    # Subsample budgets for quick runs (smoke profile, tests); null = use everything.
    limit_train: int | None = Field(None, ge=20)
    limit_test: int | None = Field(None, ge=10)
    verify_checksums: bool = True

    @model_validator(mode="after")
    def _target_pair(self) -> DataParams:
        if not self.is_whole():  # a stage's partial view: the whole was validated at compile time
            return self
        if (self.target_source is None) != (self.target_path is None):
            raise ValueError("data.target_source and data.target_path go together: set both (the target domain's "
                             "source and where it is) or neither")
        return self


class OptimParams(Section):
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    batch_size: int = Field(128, ge=2, le=65536)


class TeacherParams(OptimParams):
    source: Literal["train", "torchscript", "state_dict"] = "train"
    path: str | None = None
    arch: str = "auto"  # auto: by the data's shape, see gandistill.archs (MNIST: lenet5)
    epochs: float = Field(8, gt=0, le=1000)
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    augment: bool = True
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # A teacher below this validation accuracy cannot teach: train_teacher stops before the GAN and the
    # student spend their budget. null: a quarter of the way from chance (1/K) to 100 %; 0: never stop.
    min_accuracy: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _path_for_import(self) -> TeacherParams:
        if not self.is_whole():  # a stage's partial view: the whole was validated at compile time
            return self
        if self.source != "train" and not self.path:
            raise ValueError(f"teacher.source={self.source} needs teacher.path (the file to import)")
        return self


class GanParams(Section):
    # conv: transposed-conv G / strided-conv D; mlp: the cGAN paper's fully connected pair (width `hidden`, 2.5–5.7×
    # cheaper on CPU); resnet: BigGAN-style G / projection D (nets/resgan.py). auto: mlp for grey ≤ 32×32, else resnet.
    arch: Literal["auto", "conv", "mlp", "resnet"] = "auto"
    hidden: int = Field(256, ge=16, le=4096)
    nz: int = Field(64, ge=2, le=1024)
    ngf: int = Field(32, ge=4, le=512)
    ndf: int = Field(32, ge=4, le=512)
    steps: int = Field(6500, ge=1)  # fits `make run` in 15 min on 2 cores
    batch_size: int = Field(128, ge=2, le=8192)
    lr_g: float = Field(2e-4, gt=0.0, le=1.0)
    lr_d: float = Field(2e-4, gt=0.0, le=1.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    # auto (loss, augment, teacher_weight): the recipe that goes with the arch (gandistill.archs.GAN_RECIPES).
    loss: Literal["auto", "bce", "hinge"] = "auto"
    spectral_norm: bool = True
    augment: list[Literal["color", "translation", "cutout"]] | Literal["auto"] = "auto"  # DiffAugment before D
    fm_weight: float = Field(1.0, ge=0.0)  # λ: L_G = adv + λ·L_FM (feature matching on D's penultimate features)
    teacher_weight: Annotated[float, Field(ge=0.0)] | Literal["auto"] = "auto"  # guidance: CE(teacher(G(z,y)), y)
    diversity_weight: float = Field(0.5, ge=0.0)  # a mode-seeking diversity term
    feature_prior_weight: float = Field(0.0, ge=0.0)  # DeepInversion's prior (priors.py) on real images' statistics
    feature_prior: Literal["class", "pooled"] = "class"  # class: class y spreads like its real images in the teacher
    # Sample from the EMA of G (None = the raw G): teacher-feature FID 61 vs 100 at 5,000 steps.
    ema_decay: float | None = Field(0.999, ge=0.0, lt=1.0)
    eval_every: int = Field(1000, ge=1)
    eval_samples: int = Field(1000, ge=10)
    # Collapse: class coverage (normalised entropy of mean teacher softmax) below this value.
    min_coverage: float = Field(0.5, ge=0.0, le=1.0)
    # Intra-class collapse: within-class spread of samples / that of real images below this.
    min_diversity: float = Field(0.2, ge=0.0, le=10.0)
    collapse_patience: int = Field(3, ge=1)


class TranslatorParams(Section):
    """train_translator: the translator between source A and target B that the method's record names —
    the unpaired CycleGAN (distill.method=cyclegan) or PixelDA's A → B generator (distill.method=pixelda).
    Keys without a method in their comment apply to both."""

    # CPU-sized: at ngf 8 a step (4 generator passes, 2 identity passes, 2 PatchGANs, batch 32) costs
    # ~0.25–0.35 s on one core. A few hundred steps leave G_BA blurry, hence several thousand.
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(32, ge=2, le=8192)
    # CycleGAN's 2e-4 is for ~200 epochs; these budgets are a few thousand steps (the transfer
    # profile's 1,000), so the rate is higher.
    lr: float = Field(5e-4, gt=0.0, le=1.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    ngf: int = Field(8, ge=4, le=256)  # generator width (CycleGAN: 64)
    n_blocks: int = Field(2, ge=0, le=12)  # residual blocks (CycleGAN: 6–9)
    ndf: int = Field(32, ge=4, le=256)
    spectral_norm: bool = True
    # L_G = adv_AB + adv_BA + λ_cyc·(cycle A + cycle B) + λ_id·(identity A + identity B) + λ_sem·semantic
    cycle_weight: float = Field(10.0, ge=0.0)  # CycleGAN: 10
    identity_weight: float = Field(1.0, ge=0.0)  # CycleGAN: 0.5·λ_cyc for photo↔painting, 0 elsewhere
    semantic_weight: float = Field(1.0, ge=0.0)  # CyCADA's semantic consistency with the frozen teacher (0 = off)
    # Where the teacher judges the translated source: "translated" = teacher(ad(G_AB(x_a))) (CyCADA eq. 4),
    # "cycle" = teacher(G_BA(G_AB(x_a))): the teacher reads only its own domain, where it is reliable
    # (judging B-style images pulled G_AB back towards A-looking images; train_translator's docstring).
    # "both": the sum — "cycle" alone lets G_AB permute the classes and G_BA undo it (train_translator).
    semantic_on: Literal["translated", "cycle", "both"] = "cycle"
    # Teacher confidence on translated target images (DAFL's L_oh + L_ie on teacher(G_BA(x_b))): G_BA's
    # outputs should be read confidently and, over a batch, spread over the classes (0 = off).
    # MNIST → MNIST-M at 500 steps, with semantic_on=cycle: teacher on G_BA(target) 57 % vs 47 % without both.
    target_entropy_weight: float = Field(1.0, ge=0.0)
    eval_every: int = Field(500, ge=1)
    eval_samples: int = Field(500, ge=10)
    # Collapse: class coverage of the teacher's labels on G_BA(x_b) below min_coverage, or spread of
    # G_BA(x_b) / spread of real source images below min_diversity, for collapse_patience checks.
    min_coverage: float = Field(0.5, ge=0.0, le=1.0)
    min_diversity: float = Field(0.2, ge=0.0, le=10.0)
    collapse_patience: int = Field(3, ge=1)
    # pixelda: G(x_a, z) = stride-1 ResNet at the target's resolution, `width` filters, `n_blocks` residual
    # blocks (the paper: 64 filters, 6 blocks), noise z ~ U(−1, 1)^nz projected to one image-sized channel.
    width: int = Field(16, ge=4, le=256)
    nz: int = Field(10, ge=1, le=1024)
    # pixelda: D's Gaussian input noise σ (on [−1, 1] pixels) and dropout after every conv (paper: 0.2, 0.1).
    d_noise_std: float = Field(0.2, ge=0.0, le=2.0)
    d_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # pixelda: λ_task of the task classifier's CE in G's loss (the term that keeps the class; paper: 1).
    task_weight: float = Field(1.0, ge=0.0)
    # pixelda: the task classifier T (target-shaped images). auto: LeNet-5 where it fits (12–32 px), else
    # the auto student for the target's shape (gandistill.archs).
    task_arch: str = "auto"
    # The class guard (gandistill/class_guard.py): when the translator keeps the class less often than the
    # teacher reads raw target images (both without target labels), for guard_patience checks in a row,
    # training stops with a warning and the student learns as plain KD on raw target images (fallback) or
    # the run fails (stop).
    guard: Literal["fallback", "stop", "warn"] = "fallback"
    guard_patience: int = Field(2, ge=1)
    guard_margin: float = Field(0.0, ge=0.0, le=1.0)  # trips when class kept + margin < teacher on raw target


DistillMethod = Literal[METHOD_NAMES]  # type: ignore[valid-type]  # one record per method: gandistill.methods


class DistillParams(OptimParams):
    method: DistillMethod = "gan"
    student_arch: str = "auto"  # auto: by the data's shape, see gandistill.archs (MNIST: lenet5_half)
    # The student is under-trained at 3,000 steps: gan 97.7 → 98.6 %, kd 98.5 → 99.0 % at 10,000
    # (bench/results/ablations-*.md); 10,000 still fits `make run` in 15 minutes on 2 cores.
    steps: int = Field(10000, ge=1)
    batch_size: int = Field(256, ge=2, le=65536)
    lr: float = Field(3e-3, gt=0.0, le=10.0)
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd: momentum 0.9 (DFAD's student optimiser)
    schedule: Literal["cosine", "constant"] = "cosine"  # cosine: warm-up then decay to 0 over `steps`
    # Polyak average of the student's weights (decay per step; null = off): the averaged student
    # is what is validated, selected and returned — it damps the oscillation of adversarial games.
    student_ema: float | None = Field(None, ge=0.0, lt=1.0)
    temperature: float = Field(4.0, gt=0.0, le=100.0)
    # KD weight α: loss = α·KL·T² + (1-α)·CE(labels). Generated samples use the conditioning label.
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    real_fraction: float = Field(0.5, ge=0.0, le=1.0, description="gan_real: share of real samples per batch")
    augment: bool = True
    mixup: float = Field(0.0, ge=0.0, le=1.0, description="probability of mixing generated pairs")
    # gan / gan_real: share of each generated batch chosen as the samples the student gets most
    # wrong (of batch·(1 + share) candidates); the rest is random. 0 = plain sampling.
    hard_fraction: float = Field(0.5, ge=0.0, le=1.0)
    # gan / gan_real: how many steps' candidates each generated sample serves on average (1 = a fresh
    # generator + teacher pass per step); > 1 draws candidates from a pool of teacher-labelled samples
    # refreshed a share per step (gandistill.bank): the generator and teacher are frozen, so only variety
    # is traded for the generator + teacher cost. 4: 1.43× distill steps/s, student accuracy unchanged over
    # 3 MNIST and 2 MNIST-M seeds (bench/results/bank.md).
    sample_reuse: float = Field(4.0, ge=1.0, le=64.0)
    adaptive_every: int = Field(0, ge=0)  # gan: every N steps G' (adaptive.py) steps toward disagreement; 0 = off
    adaptive_lr: float = Field(1e-4, gt=0.0, le=1.0)  # G' is a copy of the cGAN's G, held by its frozen D
    hint_weight: float = Field(0.0, ge=0.0)
    # Attention transfer (losses.attention_transfer) on the last spatial feature map; the authors
    # use 1000 with their batch-and-position mean. 0 = off. Measured: bench/results/attention.md.
    attention_weight: float = Field(0.0, ge=0.0)
    rkd_distance_weight: float = Field(0.0, ge=0.0)
    rkd_angle_weight: float = Field(0.0, ge=0.0)
    eval_every: int = Field(250, ge=1)
    # cyclegan: share of each batch that is translated source images G_AB(x_a), labelled by the teacher
    # on x_a (the rest: target images x_b labelled by the teacher on G_BA(x_b)).
    source_fraction: float = Field(0.5, ge=0.0, lt=1.0)
    # pixelda: target images join the student's batches with a pseudo-label where one is confident enough
    # (`pseudo_threshold`, max softmax): "task" = the translator's task classifier T labels them once;
    # "mean_teacher" = an EMA of the student labels them as it learns (French et al. 2018); "none" = the
    # student learns from translated source images only.
    pseudo_labels: Literal["task", "mean_teacher", "none"] = "task"
    pseudo_threshold: float = Field(0.9, ge=0.0, le=1.0)
    # cyclegan / target_kd: colour/intensity augmentation of the student's inputs (augment.random_colour:
    # channel order, per-channel gain/offset, negative), after the teacher labelled the unaugmented image.
    colour_augment: bool = False
    # adversarial: weight of the student's fool-the-output-discriminator term.
    adversarial_weight: float = Field(0.1, ge=0.0)
    # data_free / dafl: the generator trained inside this stage.
    # Convolutions' spatial prior matters here: at equal steps a conv generator's student reached
    # 85% where an MLP generator's reached 70% (bench/README.md). Width = ngf (conv) or hidden (mlp).
    # dfad: DFAD's own (unconditional, upsample + 3×3 conv) generator, for the faithful comparison.
    generator_arch: Literal["auto", "conv", "mlp", "dfad"] = "conv"
    generator_width: int = Field(16, ge=4, le=4096)
    generator_lr: float = Field(1e-3, gt=0.0, le=1.0)
    generator_beta1: float = Field(0.5, ge=0.0, lt=1.0)  # Adam β1 of the in-stage generator (DFAD: 0.9)
    generator_nz: int = Field(64, ge=2, le=1024)  # latent size of the in-stage generator (DFAD: 100)
    student_steps_per_generator_step: int = Field(5, ge=1, le=100)  # DFAD: 5
    # γ of DAFL's information-entropy (class balance) term in the generator loss; DAFL uses 5.
    balance_weight: float = Field(5.0, ge=0.0)
    # data_free: teacher CE of G(z, y) against the conditioning label y (0 = off).
    generator_guidance_weight: float = Field(0.0, ge=0.0)
    # data_free: weight of a total-variation prior on the generator's images (0 = off). Without
    # it one seed in four drifted to high-frequency textures and collapsed (52 %); with 5: 96 %.
    generator_tv_weight: float = Field(5.0, ge=0.0)
    generator_feature_prior_weight: float = Field(0.0, ge=0.0)  # data_free: DeepInversion's BN prior (priors.py)
    dafl_activation_weight: float = Field(0.1, ge=0.0)
    # Quantisation-aware distillation: fake-quantise the student (as the INT8 export will) during
    # the last qat_fraction of the steps; selection then only considers steps inside that phase.
    qat: bool = False
    qat_fraction: float = Field(0.2, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _method_consistency(self) -> DistillParams:
        if not self.is_whole():  # a stage's partial view: the whole was validated at compile time
            return self
        if self.method == "gan_real" and self.real_fraction in (0.0, 1.0):
            raise ValueError("distill.method=gan_real needs 0 < distill.real_fraction < 1 "
                             "(use method=gan for 0 or method=kd for 1)")
        return self


class EvaluateParams(Section):
    batch_size: int = Field(1000, ge=1)
    latency_runs: int = Field(50, ge=1)
    ece_bins: int = Field(15, ge=2, le=100)
    privacy_samples: int = Field(2000, ge=10)
    gan_samples: int = Field(2000, ge=10)
    # The "Explain" sections' budget (stages/evaluate/explain.py): samples per class on each side of
    # the coverage / atlas measures (real test images and samples the student learned from), and the
    # fixed images per class whose input-gradient maps are compared.
    explain_per_class: int = Field(500, ge=10, le=100_000)
    saliency_per_class: int = Field(16, ge=1, le=10_000)
    # Students distilled by these other methods in the same run (the DAG fans them out) and
    # compared with the student in the report: what the chosen method bought, on the same data.
    baselines: list[DistillMethod] = Field(default_factory=list)  # type: ignore[valid-type]


class ExportParams(Section):
    onnx_opset: int = Field(18, ge=13, le=23)
    parity_atol: float = Field(1e-4, gt=0.0)
    # INT8: also ship a statically quantised ONNX model (gandistill/quantization.py), calibrated on
    # generated samples where the method has a generator ("auto"), or on real training images.
    int8: bool = True
    int8_calibration: Literal["auto", "generated", "real"] = "auto"
    int8_calibration_samples: int = Field(512, ge=8, le=100_000)
    # Export fails when INT8 test accuracy is more than this below the FP32 student's (a fraction:
    # 0.003 = 0.3 percentage points).
    int8_max_drop: float = Field(0.003, ge=0.0, le=1.0)


class PromoteParams(Section):
    model_name: str = Field("gandistill-student", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    min_accuracy: float = Field(0.95, ge=0.0, le=1.0)
    max_drop_vs_teacher: float = Field(0.03, ge=0.0, le=1.0)
    champion_epsilon: float = Field(0.002, ge=0.0, le=1.0)


class RuntimeParams(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=256)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast on CUDA only
    checkpoint_every: int = Field(500, ge=1)
    # A second live run with the same params (a scheduled run overlapping a manual one, a retried pod)
    # finds a stage's checkpoints held: it waits this long for the holder, then resumes from what that
    # run left — or, past the wait, trains apart with checkpoints of its own. null: wait while it runs.
    checkpoint_wait_s: float | None = Field(None, ge=0)
    max_retries: int = Field(2, ge=0, le=10, description="divergence retries with a lower learning rate")
    retry_lr_factor: float = Field(0.5, gt=0.0, lt=1.0)
    progress: bool = True
    # torchrun workers: a collective that waits longer than this fails the stage (a hung rank).
    collective_timeout_s: int = Field(600, ge=10, le=86400)


class StageResources(Section):
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    accelerator_type: str | None = None
    accelerator_count: int | None = Field(None, ge=1)
    # Placement for this stage alone; when set (even to {} / []) it replaces pipeline.node_selector /
    # pipeline.tolerations, so CPU stages need not wait for (and hold) GPU nodes.
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, str]] | None = None


class CheckpointVolume(Section):
    """A PersistentVolumeClaim mounted into every training pod to hold checkpoints (the
    alternative to an s3:// checkpoint_root). ReadWriteMany when a retried pod may land on
    another node or training tasks run side by side (baselines); ReadWriteOnce only if not."""
    claim: str = Field(..., min_length=1, description="the PersistentVolumeClaim's name (in the run's namespace)")
    mount_path: str = Field("/mnt/gandistill-checkpoints", description="where the training pods mount it")


class PipelineParams(Section):
    image: str = Field("gandistill-python", description="the component image: a repository (compile and submit "
                       "add this code's content tag), its content tag, or an image@sha256:digest")
    # Keyed by the stages' pods (gandistill.stage_records: promote_gate runs in promote's).
    resources: dict[Literal[stage_records.with_resources()], StageResources] = Field(  # type: ignore[valid-type]
        default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    secrets: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="k8s secret name -> {secret key: env var}")
    checkpoint_root: str = Field(
        "", description="where training tasks keep checkpoints so a retried pod resumes: an s3:// prefix "
        "(credentials via pipeline.secrets) or a path on pipeline.checkpoint_volume (its mount path when "
        "empty); empty without a volume = the pod's own disk")
    checkpoint_volume: CheckpointVolume | None = Field(
        None, description="{claim, mount_path}: a PVC the training tasks mount for their checkpoints")
    retries: int = Field(2, ge=0, le=10, description="KFP retries of a failed training task (backoff 30 s, "
                         "doubling); `run --local` does not retry (re-run the command: it resumes)")

    @model_validator(mode="after")
    def _checkpoint_root_is_storage_we_write(self) -> PipelineParams:
        root = self.checkpoint_root
        if "://" in root and not root.startswith("s3://"):
            raise ValueError(f"pipeline.checkpoint_root={root!r}: use an s3://bucket/prefix URI (S3, MinIO, "
                             "SeaweedFS, ...) or a path on a mounted volume")
        volume = self.checkpoint_volume
        if volume is not None:
            mount = volume.mount_path.rstrip("/")
            if not mount.startswith("/"):
                raise ValueError(f"pipeline.checkpoint_volume.mount_path={volume.mount_path!r}: use an absolute path")
            if root and root.rstrip("/") != mount and not root.startswith(mount + "/"):
                raise ValueError(f"pipeline.checkpoint_root={root!r} is not on pipeline.checkpoint_volume (mounted "
                                 f"at {mount}): leave checkpoint_root empty (= the mount path) or put it under "
                                 f"{mount}/, or drop checkpoint_volume to use the object store")
        return self

    def cluster_checkpoint_root(self) -> str:
        """Where a training pod on the cluster keeps its checkpoints: checkpoint_root, or the
        volume's mount path when only a volume is given; '' = the pod's own disk."""
        if self.checkpoint_root or self.checkpoint_volume is None:
            return self.checkpoint_root
        return self.checkpoint_volume.mount_path


class Params(Section):
    seed: int = Field(0, ge=0)
    # The stage whose partial view this is (gandistill.stage_params.view); None: the whole params.
    _view_of: str | None = PrivateAttr(default=None)
    data: DataParams = Field(default_factory=DataParams)
    teacher: TeacherParams = Field(default_factory=TeacherParams)
    gan: GanParams = Field(default_factory=GanParams)
    translator: TranslatorParams = Field(default_factory=TranslatorParams)
    distill: DistillParams = Field(default_factory=DistillParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    export: ExportParams = Field(default_factory=ExportParams)
    promote: PromoteParams = Field(default_factory=PromoteParams)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    pipeline: PipelineParams = Field(default_factory=PipelineParams)

    @model_validator(mode="after")
    def _domain_matches_method(self) -> Params:
        if not self.is_whole():  # a stage's partial view: the whole was validated at compile time
            return self
        method = METHODS[self.distill.method]
        if method.domain == "target" and self.data.target_source is None:
            raise ValueError(f"distill.method={method.name} trains a student for a target domain: set "
                             "data.target_source and data.target_path (e.g. --profile transfer: MNIST → mnistm)")
        if method.domain == "source" and self.data.target_source is not None:
            raise ValueError(f"data.target_source is set but distill.method={method.name} does not use a target "
                             "domain: use distill.method=cyclegan, or unset data.target_source / data.target_path")
        return self

    @model_validator(mode="after")
    def _int8_calibration_fits_the_method(self) -> Params:
        if not self.is_whole():  # a stage's partial view: the whole was validated at compile time
            return self
        method, choice = METHODS[self.distill.method], self.export.int8_calibration
        if choice == "real" and not method.real_data_anywhere:
            raise ValueError(f"export.int8_calibration=real: distill.method={method.name} uses no real image anywhere, "
                             "so neither may its INT8 calibration; use 'generated' or 'auto'")
        if choice == "generated" and not method.has_generator:
            have = ", ".join(m.name for m in METHODS.values() if m.has_generator)
            raise ValueError(f"export.int8_calibration=generated: distill.method={method.name} has no generator to "
                             f"sample (only {have} have one); use 'auto'")
        return self

    @model_validator(mode="after")
    def _baselines_differ(self) -> Params:
        if not self.is_whole():  # a stage's partial view: the whole was validated at compile time
            return self
        repeated = sorted({m for m in self.evaluate.baselines if self.evaluate.baselines.count(m) > 1})
        if repeated or self.distill.method in self.evaluate.baselines:
            raise ValueError(f"evaluate.baselines must list methods other than distill.method "
                             f"({self.distill.method}), each once; got {self.evaluate.baselines}")
        method = METHODS[self.distill.method]
        unfit = [b for b in self.evaluate.baselines
                 if METHODS[b].domain != method.domain or METHODS[b].needs_translator]
        if unfit:
            raise ValueError(f"evaluate.baselines {unfit}: a baseline student must learn the same domain as "
                             f"distill.method={method.name} ({method.domain}) without a translator")
        return self

    @property
    def view_of(self) -> str | None:
        return self._view_of

    def to_json(self) -> str:
        return self.model_dump_json()

    def flat(self) -> dict[str, Any]:
        """`section.key -> value`, for MLflow params and summaries."""
        return _flatten(self.model_dump(exclude={"pipeline"}))


# ---------------------------------------------------------------------------------------
# Loading, overrides, errors


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def validate(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params tree, raising one ConfigError that lists every offending key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = list(dict.fromkeys(describe_error(e, Params) for e in exc.errors()))  # union members repeat
        raise ConfigError(
            f"{source} is invalid ({len(lines)} problem{'s' if len(lines) > 1 else ''}):\n"
            + "\n".join(lines)
            + "\nFix these keys in the params file or the --set overrides; `gandistill params` "
            "prints the full schema with defaults."
        ) from None


def load_params(
    path: str | Path | None = DEFAULT_PARAMS_FILE,
    overrides: list[str] | None = None,
    profile: str | None = None,
) -> Params:
    """The params a run uses, in layers: the schema's defaults (which equal the shipped
    params.yaml, a test keeps them equal), then the params file at `path` (a partial file
    changes only the keys it names), then the profile, then `--set` overrides."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"params file {file} not found: pass --params FILE or run from the project root")
        tree = load_yaml(file.read_text(), str(file)) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{file}: expected a mapping of sections at the top level")
        source = str(file)
    profiles = BUILTIN_PROFILES | (tree.pop("profiles", {}) or {})
    if profile is not None:
        if profile not in profiles:
            raise ConfigError(
                f"profile '{profile}' is not defined (built in or in {source}); known profiles: "
                f"{', '.join(profiles)}"
            )
        for key, value in (profiles[profile] or {}).items():
            apply_override(tree, f"{key}={json.dumps(value)}")
    for assignment in overrides or []:
        if assignment.startswith("profiles."):
            raise ConfigError(f"--set {assignment!r}: profiles are chosen with --profile NAME, not set with --set; "
                              "to change one, edit the 'profiles:' section of your params file")
        apply_override(tree, assignment)
    return validate(tree, source)


def params_yaml(params: Params) -> str:
    """The params as YAML (what `gandistill params` prints: exactly what a run would use)."""
    return yaml.safe_dump(params.model_dump(), sort_keys=False)
