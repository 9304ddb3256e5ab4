"""Structured (dataclass) schema of a pand run configuration.

The YAML files under ``configs/`` are merged onto these dataclasses with OmegaConf, so an unknown
key, a wrong type or a missing required value fails before any work starts (see
:mod:`pand.config.loader`). A field declared with ``choice``/``count``/``number`` (:mod:`pand.config.checks`) also
says what it may hold: one of its owner's names (the optimiser factory's table, the runtime spec's interpolations,
the transforms' augmentations, the dataset registry, ...), an integer count >= its bound, a number in its range; the
loader checks every value against :data:`CHECKS` after the merge. These dataclasses are also the annotated types of
the functions that take a section (``DataCfg`` for :func:`pand.data.build_splits`, ...); the DictConfig nodes of a
loaded configuration are duck-typed as them. Each section belongs to one part of the toolchain:

* ``data``     -> :mod:`pand.data` (one YAML per dataset in ``configs/data/``; the valid ``data.name`` values are
  the dataset registry's, :data:`pand.data.registry.DATASETS`, and ``data.synthetic`` is the generator's
  :class:`pand.data.synthetic.settings.SyntheticCfg`)
* ``teacher``  -> :mod:`pand.models.teacher` (``configs/teacher/``)
* ``student``  -> :mod:`pand.models.students` (``configs/student/``)
* ``recipe``   -> which stages run and which loss terms are on (``configs/recipe/``)
* ``trainer``  -> devices, precision, seed, workers (``configs/trainer/``)
* ``psc``      -> Stage PSC (CoOp prompt learning on cached teacher features)
* ``nsd``      -> Stage NSD (student distillation)
* ``promptkd`` -> the PromptKD recipe
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from pand.data.aircraft import CLASS_FILES as AIRCRAFT_LEVELS
from pand.data.registry import DATASETS
from pand.data.transforms import AUGMENTS
from pand.data.synthetic.settings import SyntheticCfg
from pand.engine.optim_table import OPTIMIZERS, SCHEDULERS
from pand_runtime.preprocess_spec import CLIP_MEAN, CLIP_STD, INTERPOLATIONS

from .checks import NONNEG, POS, UNIT, Check, choice, count, number, schema_checks

__all__ = [
    "DATASETS", "RECIPES", "STAGES", "SyntheticCfg", "DataCfg", "TeacherCfg", "StudentCfg", "RecipeCfg", "TrainerCfg",
    "PSCCfg", "NLRDCfg", "TeacherCacheCfg", "NSDCfg", "PromptSRCCfg", "PromptKDCfg", "RunCfg", "CHECKS", "CHOICES",
]

#: the methods (``recipe.name``); each has its file ``configs/recipe/<name>.yaml`` and is the ``kind`` of its run
#: folder (:data:`pand.engine.run_folder.KINDS`); tests/config/test_config_choices.py keeps the three in step
RECIPES = ("ce", "kd", "vl2lite", "pand", "promptkd")
STAGES = ("all", "psc", "nsd")  # pand-train --stage: the whole recipe, only Stage PSC, only Stage NSD


@dataclass
class DataCfg:
    """One dataset on disk, read in its official layout."""

    name: str = choice(MISSING, DATASETS)  # the dataset registry's names
    root: Optional[str] = None  # dataset location; required for all but synthetic
    template: str = "a photo of a {}."  # hand-crafted prompt template, '{}' = class name
    class_names: Optional[List[str]] = None  # override the names read from the dataset files
    val_fraction: float = number(0.1, (0.0, False, 1.0, True))  # held out of train, stratified, seeded
    val_seed: int = 0
    skip_corrupt: bool = False  # skip unreadable images with a warning count instead of failing
    labels_per_class: Optional[int] = count(None)  # label budget: keep N labelled train images per class
    # unlabelled transfer set for Stage NSD (the teacher labels it; CE never sees it): null (off) | "rest" (the
    # training images beyond data.labels_per_class) | a folder of images (searched recursively)
    unlabeled: Optional[str] = None
    aircraft_level: str = choice("variant", AIRCRAFT_LEVELS)  # fgvc_aircraft: variant | family | manufacturer
    dtd_partition: int = 1  # dtd: which of the 10 official splits (labels/train<k>.txt)
    flowers_use_val: bool = False  # flowers102: official val split instead of a held-out one
    synthetic: SyntheticCfg = field(default_factory=SyntheticCfg)


@dataclass
class TeacherCfg:
    """A frozen open_clip model: ``arch`` + ``pretrained`` (open_clip tag or local file)."""

    arch: str = MISSING
    pretrained: Optional[str] = None  # open_clip pretrained tag, local checkpoint path, or null (random init)
    image_size: Optional[int] = count(None)  # force a different input size
    precision: str = choice("fp32", ("fp32", "amp"))  # fp32 | amp (bf16/fp16 autocast on CUDA only)
    batch_size: int = count(64)  # feature-extraction batch
    seed: int = 0  # random-init seed when pretrained is null (makes the random teacher reproducible)


@dataclass
class StudentCfg:
    """A lightweight classifier from the student registry (:func:`pand.models.create_student`)."""

    arch: str = "resnet18"
    pretrained: bool = False  # torchvision ImageNet weights (downloads) or a local path via `weights`
    weights: Optional[str] = None  # local file with backbone weights (safetensors or torch state dict)
    image_size: int = count(224)
    resize_size: Optional[int] = count(None)  # eval resize of the shorter side; default image_size / 0.875
    interpolation: str = choice("bilinear", INTERPOLATIONS)  # the runtime spec's
    mean: List[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: List[float] = field(default_factory=lambda: list(CLIP_STD))
    augment: str = choice("standard", AUGMENTS)  # standard (random resized crop + flip) | pand_reference (docs/method.md) | none
    train_crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop scale range
    # BatchNorm running-statistics momentum set on every BatchNorm layer of the student; null keeps the
    # architecture's own (torchvision: 0.1, but 0.01 in MobileNetV3, a TensorFlow port made for ImageNet-length
    # schedules: from scratch over a few hundred steps its running statistics lag the weights and evaluation falls
    # to chance, README "Picking the student for a latency budget")
    bn_momentum: Optional[float] = number(None, (0.0, True, 1.0, False))


@dataclass
class RecipeCfg:
    """Which method: ce | kd | vl2lite | pand | promptkd."""

    name: str = choice(MISSING, RECIPES)
    use_teacher: bool = True
    anchors: str = choice("psc", ("psc", "handcrafted"))  # psc (learned CoOp anchors) | handcrafted (template through the text tower)
    # how the teacher teaches: align (L1 feature + KL text-logit through alignment heads: VL2Lite, PAND) |
    # logits (Hinton's KD on the student's own classifier against the teacher's zero-shot logits: recipe kd)
    distill: str = choice("align", ("align", "logits"))
    use_nlrd: bool = True
    kl_reduction: str = choice("batchmean", ("batchmean", "vl2lite"))  # batchmean (PAND) | vl2lite (elementwise mean * C/2)


@dataclass
class TrainerCfg:
    """Where and how training runs."""

    devices: int = count(1)  # >1 launches DDP through torchrun (torch.distributed.run)
    accelerator: str = choice("auto", ("auto", "cpu", "cuda"))  # auto | cpu | cuda
    backend: Optional[str] = None  # nccl on CUDA, gloo on CPU when null
    precision: str = choice("fp32", ("fp32", "bf16", "fp16"))  # fp32 | bf16 | fp16 (AMP on CUDA only)
    channels_last: bool = True  # CUDA only
    sync_batchnorm: bool = True  # DDP on CUDA: BatchNorm -> SyncBatchNorm (the reference's ddp.yaml)
    compile: bool = False  # torch.compile the student
    seed: int = 0
    deterministic: bool = False
    num_workers: int = count(2, low=0)
    pin_memory: bool = True
    persistent_workers: bool = True
    log_every: int = count(10)  # steps between logged records
    tensorboard: bool = True
    # a step whose loss is NaN/inf stops the run naming the step (false) or is skipped, counted and reported (true)
    skip_nonfinite_steps: bool = False


@dataclass
class PSCCfg:
    """Stage PSC: CoOp context prompts on cached, L2-normalised teacher image features."""

    enabled: bool = True
    n_ctx: int = count(16)
    ctx_init: Optional[str] = None  # e.g. "a photo of a"; null = random N(0, 0.02^2)
    csc: bool = False  # class-specific context
    class_token_position: str = choice("end", ("end", "middle", "front"))  # end | middle | front
    prompt_form: str = choice("template", ("template", "coop"))  # template (seed: ctx + templated sentence) | coop (ctx + name + ".")
    optimizer: str = choice("sgd", OPTIMIZERS)  # the optimiser factory's table
    lr: float = number(0.002, POS)
    momentum: float = number(0.9, UNIT)
    weight_decay: float = number(0.0, NONNEG)
    epochs: int = count(200)
    batch_size: int = count(32)
    warmup_epochs: int = count(0, low=0)
    patience: int = count(50, low=0)  # early stopping on val accuracy; 0 = off
    grad_clip: float = number(1.0, NONNEG)
    artifact: Optional[str] = None  # use this learned_text_features file instead of training


@dataclass
class NLRDCfg:
    k: int = count(3)
    weight: float = number(1.0, NONNEG)
    lam: float = number(1.0, NONNEG)


@dataclass
class TeacherCacheCfg:
    """Teacher-feature cache with augmentation replay (0 views = live teacher; :mod:`pand.nsd.teacher_cache`)."""

    # V views per image, encoded once; each image gets its own view per epoch (8-16 recommended); 0 = live teacher.
    # "auto": measure the teacher's and the student's per-batch cost on a few training batches and use a
    # min(8, nsd.epochs)-view cache only when it is projected >= 10% faster end to end (pand.nsd.teacher_cache_auto;
    # the choice is printed and recorded in summary.json). Typed Any (an int >= 0 or "auto"; checked at load).
    views: Any = count(0, low=0, words=("auto",), null=False)
    shard_size: int = count(4096)  # images per shard file under <cache_dir>/nsd_teacher/<key>/
    dtype: str = choice("fp16", ("fp16", "fp32"))  # fp16 (half the disk) | fp32 (bit-exact with the live teacher)


@dataclass
class NSDCfg:
    """Stage NSD: student distillation (CE + L1 + KL text-logit + NLRD)."""

    epochs: int = count(300)
    batch_size: int = count(128)  # global batch, divided by the number of devices
    optimizer: str = choice("adamw", OPTIMIZERS)
    lr: float = number(1e-4, POS)
    weight_decay: float = number(1e-4, NONNEG)
    momentum: float = number(0.9, UNIT)  # sgd only
    scheduler: str = choice("cosine", SCHEDULERS)  # cosine over the whole run | step | none
    eta_min: float = number(1e-5, NONNEG)
    step_size: int = count(30)
    gamma: float = number(0.5, (0.0, True, 1.0, False))
    warmup_epochs: int = count(0, low=0)
    temperature: float = number(2.0, POS)
    logit_scale: float = number(14.285714285714286, POS)  # s0 = 1/0.07
    grad_clip: float = number(0.0, NONNEG)
    ce_ramp: float = number(8.0, POS)  # w_ce = clip(epoch / (ce_ramp * epochs), 0, 1)
    ce_weight: Optional[float] = number(None, UNIT)  # null: the ramp above; a number: constant w_ce (and w_kd = 1 - w_ce)
    nlrd: NLRDCfg = field(default_factory=NLRDCfg)
    # with data.unlabeled: the share of labelled images in every training batch (at least one per batch);
    # null = their share of the transfer set (labelled / (labelled + unlabelled))
    labeled_fraction: Optional[float] = None
    teacher_cache: TeacherCacheCfg = field(default_factory=TeacherCacheCfg)
    eval_every: int = count(1)


@dataclass
class PromptSRCCfg:
    """PromptKD's PromptSRC teacher: deep vision + language prompts on the frozen teacher, trained on base labels."""

    n_ctx_text: int = count(4, low=0)  # learnable text context tokens (initialised from ctx_init when its token count matches)
    n_ctx_vision: int = count(4, low=0)
    prompt_depth_text: Optional[int] = count(None, low=0)  # null: the reference's 9, capped at the text tower's layer count
    prompt_depth_vision: Optional[int] = count(None, low=0)  # null: the reference's 9, capped at the image tower's layer count
    ctx_init: Optional[str] = "a photo of a"  # null: random N(0, 0.02^2)
    epochs: int = count(20)
    batch_size: int = count(8)
    lr: float = number(0.005, POS)
    momentum: float = number(0.9, UNIT)
    weight_decay: float = number(5e-4, NONNEG)
    warmup_epochs: int = count(1, low=0)
    warmup_lr: float = number(1e-5, NONNEG)
    text_loss_weight: float = number(25.0, NONNEG)  # L1(prompted, frozen) text features
    image_loss_weight: float = number(10.0, NONNEG)  # L1(prompted, frozen) image features
    gpa_mean: float = 15.0  # Gaussian prompt aggregation over epochs 1..E (the reference's 15 / 1 for 20 epochs)
    gpa_std: float = number(1.0, POS)
    # frozen-model text features: the mean over these templates; [] = data.template
    zs_templates: List[str] = field(default_factory=list)
    artifact: Optional[str] = None  # reuse a trained promptsrc_teacher.safetensors instead of training


@dataclass
class PromptKDCfg:
    """PromptKD: unlabeled distillation into a smaller prompted CLIP image encoder."""

    student_arch: str = MISSING  # open_clip architecture of the student image encoder
    student_pretrained: Optional[str] = None
    n_ctx_vision: int = count(4, low=0)
    prompt_depth: int = count(9, low=0)
    train_layernorm: bool = False
    # unlabeled distillation pool: reference (train images of all classes, no test image; the reference code's) |
    # inductive (train images of the base classes only) | transductive (all train images + the test images)
    pool: str = choice("reference", ("reference", "inductive", "transductive"))
    regime: Optional[str] = choice(None, ("inductive", "transductive"))  # deprecated alias of pool (inductive | transductive); refused if it contradicts pool
    temperature: float = number(1.0, POS)
    kd_weight: Optional[float] = number(None, POS)  # null: the reference's value for data.name (1000; 200 aircraft/flowers/dtd)
    optimizer: str = choice("sgd", OPTIMIZERS)
    lr: float = number(0.005, POS)
    momentum: float = number(0.9, UNIT)
    weight_decay: float = number(5e-4, NONNEG)
    epochs: int = count(20)
    batch_size: int = count(8)
    warmup_epochs: int = count(1, low=0)
    warmup_lr: float = number(1e-5, NONNEG)
    # where the pre-stored class vectors and the teacher image features come from: promptsrc (the reference: deep
    # vision + language prompts) | coop (Stage PSC text context, frozen image tower; psc = old name) | handcrafted
    teacher_prompts: str = choice("promptsrc", ("promptsrc", "coop", "psc", "handcrafted"))
    promptsrc: PromptSRCCfg = field(default_factory=PromptSRCCfg)
    cross_eval: List[str] = field(default_factory=list)  # other data configs to evaluate on
    logit_scale: Optional[float] = number(None, POS)  # student logit scale; null = the student CLIP's own exp(logit_scale)
    train_crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop scale range
    select: str = choice("last", ("last", "best_val"))  # last | best_val (base-class accuracy on the held-out val split, never test)
    eval_batch_size: int = count(100)


@dataclass
class RunCfg:
    """Root of a pand run configuration."""

    name: str = "run"
    run_dir: Optional[str] = None  # default runs/<name>
    cache_dir: str = ".cache/pand"
    data: DataCfg = field(default_factory=DataCfg)
    teacher: TeacherCfg = field(default_factory=TeacherCfg)
    student: StudentCfg = field(default_factory=StudentCfg)
    recipe: RecipeCfg = field(default_factory=RecipeCfg)
    trainer: TrainerCfg = field(default_factory=TrainerCfg)
    psc: PSCCfg = field(default_factory=PSCCfg)
    nsd: NSDCfg = field(default_factory=NSDCfg)
    promptkd: PromptKDCfg = field(default_factory=PromptKDCfg)


#: ``{dotted key: Check}`` of every checked setting (declared on the fields above), tested at load
CHECKS: Dict[str, Check] = schema_checks(RunCfg)
#: ``{dotted key: valid values}`` of the settings that take one of a list (a view of :data:`CHECKS`)
CHOICES: Dict[str, tuple] = {k: c.choices for k, c in CHECKS.items() if c.choices}
