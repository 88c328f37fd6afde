"""One record per distillation method: what it needs, what it promises, where it comes from.

Torch-free on purpose: the params schema, the DAG compiler, the export's model card, the
benchmark and the README's method table all read these records, and compiling the pipeline
must not import torch. A method's *math* is a step factory in its family's module under
`gandistill.stages.distill` (registered in that module's STEPS); adding a method means adding its
record here and its step there (a test checks the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RealImages = Literal["none", "all", "fraction"]
Domain = Literal["source", "target"]
Translator = Literal["", "cyclegan", "pixelda"]


@dataclass(frozen=True)
class Method:
    name: str
    sees: str  # what the student's updates are computed on
    loss: str  # the student's objective, as a formula
    citation: str
    description: str  # one sentence for the model card: how the student was made
    limitation: str = ""  # what the model card warns about ("" = nothing beyond the generic)
    needs_trained_gan: bool = False  # train_gan runs in the DAG and its generator feeds distill
    trains_generator: bool = False  # distill trains a generator in-stage (data-free) and saves it
    real_images: RealImages = "none"  # real training images in the student's batches
    real_data_anywhere: bool = True  # False: no real image anywhere, model selection included
    needs_teacher_features: bool = False  # reads teacher.forward_features, not only logits
    # Cross-domain transfer: "target" = the student is trained for, and evaluated on, the target
    # domain B (data.target_*) while the teacher knows only the source domain A.
    domain: Domain = "source"
    # The translator train_translator trains for this method and distill reads ("" = none, no such stage):
    # "cyclegan" = CycleGAN A ↔ B (G_AB, G_BA); "pixelda" = PixelDA A → B (G(x_a, z) + a task classifier).
    translator: Translator = ""
    needs_target_labels: bool = False  # trains on target labels (only the supervised upper bound does)
    baselines: tuple[str, ...] = ()  # methods the DAG also trains, for the report's side-by-side

    @property
    def selection(self) -> Literal["val_acc", "val_agreement", "final"]:
        """Methods that may touch real data select the step on the real validation split; the
        data-free ones have nothing real to select on and return the final student. Target-domain
        methods without target labels select on agreement with their own teacher signal on held-out
        target images (val_agreement): target labels never choose a step."""
        if self.domain == "target" and not self.needs_target_labels:
            return "val_agreement"
        return "val_acc" if self.real_data_anywhere else "final"

    @property
    def needs_translator(self) -> bool:
        """train_translator runs in the DAG and its translator feeds distill and evaluate."""
        return bool(self.translator)

    @property
    def has_generator(self) -> bool:
        """A generator the student learned from exists after distill: the trained cGAN, or the
        one a data-free method trains in-stage (distill saves it). INT8 calibration samples it."""
        return self.needs_trained_gan or self.trains_generator

    @property
    def in_pipeline_stages(self) -> tuple[str, ...]:
        return (("train_gan",) if self.needs_trained_gan else ()) + (
            ("train_translator",) if self.needs_translator else ())


_DATA_FREE_LIMITATION = ("Trained without any real data: accuracy on inputs far from what the generator explored "
                         "can be markedly lower than the test figure suggests.")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method(
        name="scratch", sees="real (x, y)", loss="CE(s, y)", citation="baseline",
        description="a baseline: the student trained on real labelled images with cross-entropy, no teacher",
        real_images="all",
    ),
    Method(
        name="kd", sees="real (x, y)", loss="α·T²·KL(p_T‖p_S) + (1−α)·CE", citation="Hinton, Vinyals, Dean 2015",
        description="Hinton et al. 2015 knowledge distillation on real training images (soft teacher labels + "
                    "labels)",
        real_images="all",
    ),
    Method(
        name="gan", sees="only G(z, y) from the trained cGAN", loss="T²·KL(p_T‖p_S)",
        citation="Mirza & Osindero 2014 (cGAN), Salimans et al. 2016 (feature matching)",
        description="the student learns the teacher's soft labels on samples of a conditional GAN trained on the "
                    "train split; it never sees a real training image",
        limitation="The student learned only from GAN samples labelled by the teacher, so it inherits the "
                   "teacher's errors and any blind spot of the generator (classes or styles the GAN "
                   "under-represents).",
        needs_trained_gan=True,
    ),
    Method(
        name="gan_real", sees="real and G(z, y), mixed per batch (`real_fraction`)", loss="KD on both",
        citation="",
        description="the student learns from a mix of real training images and conditional-GAN samples, both "
                    "labelled softly by the teacher",
        limitation="Trained on a mix of real images and GAN samples labelled by the teacher; inherits the "
                   "teacher's errors.",
        needs_trained_gan=True, real_images="fraction",
    ),
    Method(
        name="data_free", sees="G(z, y) trained against the student — no real data anywhere",
        loss="L1(t, s); G maximises it + γ·information entropy (class balance)",
        citation="Fang et al. 2019 (DFAD), balance term from Chen et al. 2019",
        description="DFAD (Fang et al. 2019): a generator synthesises samples on which teacher and student "
                    "disagree; no real data is used at all",
        limitation=_DATA_FREE_LIMITATION, real_data_anywhere=False, trains_generator=True,
    ),
    Method(
        name="dafl", sees="G trained by the teacher alone", loss="one-hot + activation + information entropy",
        citation="Chen et al. 2019 (DAFL)",
        description="DAFL (Chen et al. 2019): a generator trained against the teacher's activations and output "
                    "statistics; no real data is used at all",
        limitation=_DATA_FREE_LIMITATION, real_data_anywhere=False, needs_teacher_features=True,
        trains_generator=True,
    ),
    Method(
        name="noise", sees="random images (Gaussian with the data's per-channel mean and std) — no generator",
        loss="T²·KL(p_T‖p_S)", citation="baseline (Chen et al. 2019, Table 1: KD on Gaussian noise)",
        description="a baseline: the student learns the teacher's soft labels on random noise images, which shows "
                    "what a generator adds; no real image is used (only the train split's pixel mean and std)",
        limitation="A baseline, not a product: a student distilled on noise is far below the teacher.",
        real_data_anywhere=False,
    ),
    Method(
        name="adversarial", sees="real (x, y)", loss="KD + output discriminator on (logits, y)",
        citation="Xu et al. 2017",
        description="knowledge distillation on real images plus an output-space discriminator (Xu et al. 2017)",
        real_images="all",
    ),
    Method(
        name="cyclegan", sees="target images x_b, labelled by the teacher on G_BA(x_b), and G_AB(x_a)",
        loss="T²·KL(p_T(G_BA(x_b))‖p_S(x_b)), T²·KL(p_T(x_a)‖p_S(G_AB(x_a)))",
        citation="Zhu et al. 2017 (CycleGAN), Hoffman et al. 2018 (CyCADA)",
        description="cross-domain transfer: a CycleGAN translates between the teacher's source domain and the "
                    "target domain; the student learns on unlabelled target images labelled by the teacher on their "
                    "translation to the source domain (and on source images translated to the target domain); it "
                    "never sees a target label",
        limitation="The student inherits the teacher's errors and whatever the translator fails to carry across "
                   "domains; its accuracy is measured on the target test split only.",
        real_images="all", domain="target", translator="cyclegan",
        baselines=("target_kd", "source_augmented", "target_supervised"),
    ),
    Method(
        name="pixelda", sees="G(x_a, z) labelled by the teacher on x_a, and target images x_b labelled by the "
                             "translator's task classifier where it is confident",
        loss="T²·KL(p_T(x_a)‖p_S(G(x_a, z))) + CE(p_S(x_b), ŷ_b) where conf(ŷ_b) ≥ τ",
        citation="Bousmalis et al. 2017 (PixelDA); pseudo-labels: Lee 2013, French et al. 2018 (mean teacher)",
        description="cross-domain transfer: a PixelDA generator paints source images in the target domain's style "
                    "(noise-conditioned, trained against a target-domain discriminator while a task classifier "
                    "keeps the class); the student learns on translated source images labelled by the teacher on "
                    "the source image and on unlabelled target images pseudo-labelled where confident; it never "
                    "sees a target label",
        limitation="Pixel-level translation carries over what changes the look (colour, texture, background, "
                   "size) but not what changes the content (new shapes of a class); the student inherits the "
                   "teacher's errors, and its accuracy is measured on the target test split only.",
        real_images="all", domain="target", translator="pixelda",
        baselines=("target_kd", "source_augmented", "target_supervised"),
    ),
    Method(
        name="source_augmented", sees="source images converted to the target's shape, colour-augmented, labelled "
                                       "by the teacher",
        loss="T²·KL(p_T(x_a)‖p_S(aug(ad(x_a))))", citation="baseline (domain randomisation, Tobin et al. 2017)",
        description="the translator-free baseline: the student learns the teacher's soft labels on source images "
                    "converted to the target's shape with random colour, intensity and polarity, and never sees a "
                    "target image in training",
        limitation="A baseline: colour augmentation covers only the shifts it happens to draw.",
        real_images="none", domain="target",
    ),
    Method(
        name="target_kd", sees="target images x_b, labelled by the teacher on x_b itself",
        loss="T²·KL(p_T(x_b)‖p_S(x_b))", citation="baseline (DAFL's out-of-domain KD, Chen et al. 2019)",
        description="plain knowledge distillation on unlabelled target images: the source-domain teacher labels "
                    "target images directly (converted to its input shape)",
        limitation="The teacher never saw the target domain: its labels on target images carry its domain-shift "
                   "errors into the student.",
        real_images="all", domain="target",
    ),
    Method(
        name="target_supervised", sees="labelled target images (x_b, y_b)", loss="CE(s, y_b)",
        citation="upper bound", description="the upper bound: a student trained with cross-entropy on labelled "
                                            "target images, no teacher",
        real_images="all", domain="target", needs_target_labels=True,
    ),
)}

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def get(name: str) -> Method:
    return METHODS[name]


def markdown_table() -> str:
    """The README's method table, generated from the records (a test keeps the README in sync)."""
    rows = ["| method | the student sees | loss | reference |", "|---|---|---|---|"]
    for m in METHODS.values():
        rows.append(f"| `{m.name}` | {m.sees} | {m.loss} | {m.citation} |")
    return "\n".join(rows)
