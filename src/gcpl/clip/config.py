"""The settings of a CLIP run (`ClipJob`), every field declared with gcpl.settings.setting.

`ClipSettings` gathers the method groups (one per method family, plus the hand-crafted prompt and
the validation data); `ClipJob` embeds it as `clip` without a prefix, and so does `gcpl
experiment` (ExperimentConfig.clip), so every group option (--tip-alpha, --coop-lr,
--src-gpa-mean, --clip-template, ...) is an option of both. Each group field has a `prefix`, so
every option is unique when the groups are flattened (gcpl.cli.options): TipConfig.alpha under
prefix "tip" is --tip-alpha, dest tip_alpha.

A value that the official code sets per dataset or per shot count, or in the method's own config
file, defaults to None ("the official value"): `gcpl.clip.official.resolve` fills it in when the
job runs from the per-dataset table for `ClipJob.dataset` and `ClipJob.shots`, explicit values
always winning, and the run records where each value came from. The other defaults are constants
of the official code (sources in each field's help and docs/CLIP.md).

Only the groups of the chosen method belong to a run's identity (`job_identity`, on the resolved
job): a CoOp run is not refused because a Tip-Adapter value changed. `upgrade_settings` reads the
settings of older run folders (the groups directly in ClipJob, their field names with prefixes,
no text group).
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass

from ..data.loaders import get_dataset
from ..errors import GcplError
from ..method_registry import METHODS
from ..settings import field_types, group_prefix, identity, setting
from ..tokens import check_template
from .model import DEFAULT_CLIP_MODEL

OFFICIAL = "default: the official value for the dataset"
#: how class names enter the prompts: as given, "_" as " " (every official code), and CoOp's
#: StanfordCars reader, which also moves the model year to the front ("2012 Acura RL Sedan")
CLASS_NAME_RULES = ("as-given", "spaces", "year-first")
TEACHERS = ("ensemble", "single")


@dataclass
class TextConfig:
    """The hand-crafted prompt and the class names of every CLIP method's prompts."""

    template: str | None = setting(
        None, f"hand-crafted prompt with one {{}}: zero-shot CLIP's classifier, Tip-Adapter's, KgCoOp's and "
        f"PromptSRC's frozen text features ({OFFICIAL}: CoOp's per-dataset prompt; where the code has none, the "
        "dataset's own prompt, --template)")
    class_names: str | None = setting(None, f"class names in the prompts ({OFFICIAL})", choices=CLASS_NAME_RULES)


@dataclass
class ValidationConfig:
    """Where linear-probe and Tip-Adapter(-F) choose their hyperparameters (never on test images)."""

    source: str = setting(
        "split", "linear-probe / tip-adapter(-f): validate on the split's val list, or where it has none on a val "
        "part of the training pool outside the support set (split, the official protocol); or on folds of the "
        "support shots (shots: no extra labels)", choices=("split", "shots"))
    shots: int = setting(4, "linear-probe: validation images per class, min(shots, this) (lpclip linear_probe.py: 4)")
    fraction: float = setting(0.2, "split, without a val list: share of each class's training images held out as "
                              "validation (CoOp's split_trainval: 0.2), support images excluded")
    cv_folds: int = setting(4, "val-source shots: at most this many folds of the support set (one shot per class "
                            "in each fold at 4 or fewer shots)")


@dataclass
class LinearProbeConfig:
    """CLIP paper (Radford et al. 2021, appendix A.3) / CoOp's lpclip/linear_probe.py."""

    c_grid: tuple[float, ...] = setting(
        (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6), "linear-probe: first sweep of the inverse L2 strength C (lpclip "
        "linear_probe.py:54)")
    search_steps: int = setting(8, "linear-probe: interval-halving steps around the best C (lpclip: 8)")
    max_iter: int = setting(1000, "linear-probe: L-BFGS iterations per fit (lpclip: 1000)")
    c: float = setting(0.316, "linear-probe: C when nothing can validate it (val-source shots at 1 shot); CLIP README")


@dataclass
class TipConfig:
    """Tip-Adapter (Zhang et al., ECCV 2022), gaopengcuhk/Tip-Adapter configs/<dataset>.yaml and main.py."""

    alpha: float | None = setting(None, f"tip-adapter: residual ratio alpha (init_alpha; {OFFICIAL})")
    beta: float | None = setting(None, f"tip-adapter: sharpness beta (init_beta; {OFFICIAL})")
    augment_epochs: int | None = setting(None, f"tip-adapter: augmented views averaged into each cache key "
                                         f"(augment_epoch; {OFFICIAL})")
    crop_scale: tuple[float, float] = setting((0.5, 1.0), "tip-adapter: RandomResizedCrop scale of the augmented "
                                              "views (main.py:174)")
    search: bool = setting(True, "tip-adapter: search alpha, beta on the validation images (search_hp)")
    search_scale: tuple[float, float] | None = setting(None, f"tip-adapter: search ranges of beta, alpha "
                                                       f"(search_scale; {OFFICIAL})")
    search_steps: tuple[int, int] | None = setting(None, f"tip-adapter: grid steps of beta, alpha (search_step; "
                                                   f"{OFFICIAL})")


@dataclass
class TipFConfig:
    """Tip-Adapter-F: the cache keys fine-tuned (main.py run_tip_adapter_F)."""

    lr: float | None = setting(None, f"tip-adapter-f: AdamW learning rate (lr; {OFFICIAL})")
    eps: float = setting(1e-4, "tip-adapter-f: AdamW eps (main.py:72)")
    weight_decay: float = setting(0.01, "tip-adapter-f: AdamW weight decay (PyTorch's default, as main.py:72)")
    epochs: int | None = setting(None, f"tip-adapter-f: epochs (train_epoch; {OFFICIAL})")
    batch: int = setting(256, "tip-adapter-f: images per step (main.py:181)")


@dataclass
class PromptTrainConfig:
    """The optimisation every prompt learner shares: Dassl's SGD with a constant warm-up epoch
    and a per-epoch cosine schedule (CoOp, CoCoOp, KgCoOp, MaPLe, PromptSRC configs)."""

    momentum: float = setting(0.9, "prompt methods: SGD momentum (Dassl default)")
    weight_decay: float = setting(5e-4, "prompt methods: SGD weight decay (Dassl default)")
    warmup_epochs: int = setting(1, "prompt methods: constant warm-up epochs (WARMUP_EPOCH 1)")
    warmup_lr: float = setting(1e-5, "prompt methods: warm-up learning rate (WARMUP_CONS_LR 1e-5)")
    crop_scale: tuple[float, float] = setting((0.08, 1.0), "prompt methods: RandomResizedCrop scale "
                                              "(Dassl INPUT.RRCROP_SCALE)")
    flip: bool = setting(True, "prompt methods: random horizontal flips")


@dataclass
class PromptMethodConfig:
    """What each prompt method sets for itself in its official config: the words its context
    starts from and its SGD schedule (each group subclasses it and adds its own fields)."""

    ctx_init: str | None = setting(None, f"words initialising the context (the method's CTX_INIT; empty: random "
                                   f"N(0, 0.02) vectors; {OFFICIAL})")
    lr: float | None = setting(None, f"SGD learning rate (the method's OPTIM.LR; {OFFICIAL})")
    batch: int | None = setting(None, f"images per step (DATALOADER.TRAIN_X.BATCH_SIZE; {OFFICIAL})")
    epochs: int | None = setting(None, f"epochs (OPTIM.MAX_EPOCH; {OFFICIAL} and shot count)")


@dataclass
class CoopConfig(PromptMethodConfig):
    """CoOp (Zhou et al., IJCV 2022), KaiyangZhou/CoOp configs/trainers/CoOp/vit_b16*.yaml, COOP.md."""

    n_ctx: int | None = setting(None, f"coop: context vectors (NCTX of the few-shot runs; {OFFICIAL})")
    csc: bool = setting(False, "coop: one context per class (CSC; the few-shot runs: False)")


@dataclass
class KgCoopConfig(PromptMethodConfig):
    """KgCoOp (Yao et al., CVPR 2023), htyao89/KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml, scripts."""

    lambda_: float | None = setting(None, f"kgcoop: weight of the knowledge-guided loss (TRAINER.COOP.W; {OFFICIAL})",
                                    flag="--lambda", metavar="LAMBDA")


@dataclass
class CocoopConfig(PromptMethodConfig):
    """CoCoOp (Zhou et al., CVPR 2022), configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml (4 context
    vectors)."""


@dataclass
class MapleConfig(PromptMethodConfig):
    """MaPLe (Khattak et al., CVPR 2023), configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml."""

    n_ctx: int | None = setting(None, f"maple: context vectors per layer (N_CTX; {OFFICIAL})")
    depth: int | None = setting(None, f"maple: prompted layers in each tower, capped at the towers' depth "
                                f"(PROMPT_DEPTH; {OFFICIAL})")


@dataclass
class PromptSrcConfig(PromptMethodConfig):
    """PromptSRC (Khattak et al., ICCV 2023), configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml."""

    n_ctx_text: int | None = setting(None, f"promptsrc: language prompt tokens (N_CTX_TEXT; {OFFICIAL})")
    n_ctx_vision: int | None = setting(None, f"promptsrc: vision prompt tokens (N_CTX_VISION; {OFFICIAL})")
    depth_text: int | None = setting(None, f"promptsrc: prompted text layers, capped at the tower's depth "
                                     f"({OFFICIAL})")
    depth_vision: int | None = setting(None, f"promptsrc: prompted vision layers, capped at the tower's depth "
                                       f"({OFFICIAL})")
    text_weight: float | None = setting(None, f"promptsrc: weight of the L1 text-feature agreement "
                                        f"(TEXT_LOSS_WEIGHT; {OFFICIAL})")
    image_weight: float | None = setting(None, f"promptsrc: weight of the L1 image-feature agreement "
                                         f"(IMAGE_LOSS_WEIGHT; {OFFICIAL})")
    gpa_mean: float | None = setting(None, f"promptsrc: mean epoch of the Gaussian prompt aggregation "
                                     f"(GPA_MEAN; {OFFICIAL})")
    gpa_std: float | None = setting(None, f"promptsrc: std of the Gaussian prompt aggregation (GPA_STD; {OFFICIAL})")
    teacher: str | None = setting(None, f"promptsrc: frozen text features of the consistency loss and the KL "
                                  f"teacher: ensemble = mean over CLIP's 60 ImageNet templates, single = the "
                                  f"hand-crafted prompt ({OFFICIAL})", choices=TEACHERS)


@dataclass
class ClipSettings:
    """Every method group of the CLIP methods: the settings `gcpl experiment` can pass to them."""

    text: TextConfig = setting(default_factory=TextConfig, prefix="clip")
    validation: ValidationConfig = setting(default_factory=ValidationConfig, prefix="val")
    linear_probe: LinearProbeConfig = setting(default_factory=LinearProbeConfig, prefix="lp")
    tip: TipConfig = setting(default_factory=TipConfig, prefix="tip")
    tip_f: TipFConfig = setting(default_factory=TipFConfig, prefix="tipf")
    prompt: PromptTrainConfig = setting(default_factory=PromptTrainConfig, prefix="prompt")
    coop: CoopConfig = setting(default_factory=CoopConfig, prefix="coop")
    kgcoop: KgCoopConfig = setting(default_factory=KgCoopConfig, prefix="kg")
    cocoop: CocoopConfig = setting(default_factory=CocoopConfig, prefix="cocoop")
    maple: MapleConfig = setting(default_factory=MapleConfig, prefix="maple")
    promptsrc: PromptSrcConfig = setting(default_factory=PromptSrcConfig, prefix="src")


def dataset_name(name: str | None) -> str | None:
    """A dataset's registry name (aliases accepted; a one-line error for unknown ones)."""
    return None if name is None else get_dataset(name).name


@dataclass
class ClipJob:
    """One CLIP method on one split, shots and seed: train (when it learns), then evaluate."""

    method: str = setting(MISSING, "the CLIP method (a registered method of the clip family)")
    data: str = setting(MISSING, "split JSON (train list; its test list is the test set) or class-per-folder dir "
                        "(split seeded and stratified unless --test-data is given)", flag="", identity=False)
    out: str = setting(MISSING, "run folder", identity=False)
    shots: int = setting(16, "support images per class (drawn as GCPL draws them for the seed)")
    seed: int = setting(0, "seeds the shots, the initial prompts and every training draw")
    dataset: str | None = setting(None, "the dataset whose official settings apply (gcpl experiment passes "
                                  "--dataset); none: each method's generic values", identity=False)
    template: str = setting("a photo of a {}.", "the dataset's own prompt (gcpl experiment passes the paper's "
                            "Table 1 prompt): the hand-crafted prompt where the official code has none for the "
                            "dataset (default: CoOp's ImageNet prompt)", identity=False)
    model: str | None = setting(None, f"CLIPModel hub id, local folder, or 'tiny' (the bundled tiny CLIP); default "
                                f"{DEFAULT_CLIP_MODEL} (the bundled one when HF_HUB_OFFLINE=1)")
    device: str | None = setting(None, "cpu, cuda or cuda:N (default: cuda when available)", identity=False)
    dtype: str | None = setting(None, "precision of the frozen CLIP towers (default: fp16 on CUDA as the official "
                                "code runs them, fp32 on CPU)", choices=("fp32", "bf16", "fp16"))
    limit: int | None = setting(None, "score a seeded random subset of N test images")
    eval_seed: int | None = setting(None, "seed of the --limit subset (default: --seed)")
    allow_fewer: bool = setting(False, "classes with fewer than --shots images use all they have")
    strict: bool = setting(False, "unreadable images are errors instead of warnings", identity=False)
    test_data: str | None = setting(None, "test images (split JSON's test list or class folder); default: the "
                                    "data's test list", identity=False)
    eval_batch: int = setting(64, "test images per forward pass", identity=False)
    checkpoint_every: int = setting(1, "epochs between training checkpoints", identity=False)
    clip: ClipSettings = setting(default_factory=ClipSettings, help="the method groups")

    def __post_init__(self):
        if self.method not in METHODS or METHODS[self.method].family != "clip":
            clip = ", ".join(n for n, m in METHODS.items() if m.family == "clip")
            raise GcplError(f"--method {self.method!r} is not a CLIP method; use one of {clip}")
        self.dataset = dataset_name(self.dataset)
        check_template(self.template)
        if self.clip.text.template is not None:
            check_template(self.clip.text.template)
        for name in ("shots", "eval_batch", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise GcplError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise GcplError(f"--limit must be a positive integer, got {self.limit!r}")

    @property
    def test_seed(self) -> int:
        return self.seed if self.eval_seed is None else self.eval_seed


GROUPS = tuple(f.name for f in dataclasses.fields(ClipSettings))


def job_identity(job: ClipJob) -> dict:
    """The identity settings of a (resolved) job: the shared ones and the groups of its method only,
    a group's settings under their dests (coop.coop_epochs: the option --coop-epochs)."""
    ident = identity(job)
    out = {k: v for k, v in ident.items() if k != "clip"}
    for f in dataclasses.fields(ClipSettings):
        if f.name in METHODS[job.method].groups:
            out[f.name] = {group_prefix(f) + k: v for k, v in ident["clip"][f.name].items()}
    return out


# Before the groups had prefixes (gcpl.settings), each group's fields carried one in their names
# and config.json stored them so: group -> that prefix (coop.coop_epochs is coop.epochs today,
# kgcoop.kg_lambda is kgcoop.lambda_: a Python keyword's trailing "_" was not in the old name).
OLD_PREFIXES = {"validation": "val_", "linear_probe": "lp_", "tip": "tip_", "tip_f": "tipf_", "prompt": "prompt_",
                "coop": "coop_", "kgcoop": "kg_", "cocoop": "cocoop_", "maple": "maple_", "promptsrc": "src_"}


def upgrade_settings(settings: dict, classes: list[str] | None = None) -> dict:
    """A ClipJob's stored settings (config.json "settings") in today's form: the groups of older
    run folders (directly in ClipJob, with prefixed field names) moved under "clip" and renamed,
    and for folders without the text group the prompt they used (--template, class names as given
    where a name has "_", which is then the same as "spaces" elsewhere); today's settings pass
    unchanged."""
    out = dict(settings)
    clip = dict(out.get("clip") or {})
    types = field_types(ClipSettings)
    for group in GROUPS:
        if isinstance(out.get(group), dict):
            clip.setdefault(group, out.pop(group))
        prefix = OLD_PREFIXES.get(group)
        if prefix and isinstance(clip.get(group), dict):
            renamed = {prefix + f.name.rstrip("_"): f.name for f in dataclasses.fields(types[group])}
            clip[group] = {renamed.get(k, k): v for k, v in clip[group].items()}
    if "text" not in clip and "template" in out:
        rule = "as-given" if any("_" in c for c in classes or ()) else "spaces"
        clip["text"] = {"template": out["template"], "class_names": rule}
    out["clip"] = clip
    return out
