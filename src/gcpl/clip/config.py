"""The settings of a CLIP run (`ClipJob`), every field declared with gcpl.settings.setting.

Defaults are the official ones of each method (sources in each group's docstring, each field's
help and docs/CLIP.md); nested groups hold one method family's hyperparameters, each group field
with a `prefix` so that every command-line option is unique when the groups are flattened
(gcpl.cli.options): TipConfig.alpha under prefix "tip" is --tip-alpha, dest tip_alpha. The
prompt methods' groups share the fields of `PromptMethodConfig` (context words, SGD schedule),
each with its method's official values.
Only the groups of the chosen method belong to a run's identity (`job_identity`): a CoOp run is
not refused because a Tip-Adapter default changed. `upgrade_settings` reads the settings of run
folders written before the groups had prefixes (their field names carried them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass

from ..errors import GcplError
from ..method_registry import METHODS
from ..settings import field_types, group_prefix, identity, setting
from ..tokens import check_template
from .model import DEFAULT_CLIP_MODEL


@dataclass
class ValidationConfig:
    """Where linear-probe and Tip-Adapter choose their hyperparameters."""

    source: str = setting(
        "shots", "linear-probe / tip-adapter: validate on folds of the support shots (no extra labels) or on the "
        "split's val list (CoOp / Tip-Adapter protocol)", choices=("shots", "split"))
    shots: int = setting(4, "val-source split: validation images per class, min(shots, this) (CoOp: 4)")
    cv_folds: int = setting(4, "val-source shots: at most this many folds of the support set (one shot per class "
                            "in each fold at 4 or fewer shots)")


@dataclass
class LinearProbeConfig:
    """CLIP paper (Radford et al. 2021, appendix A.3) / CoOp's lpclip/linear_probe.py."""

    c_grid: tuple[float, ...] = setting(
        (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6), "linear-probe: first sweep of the inverse L2 strength C (CLIP A.3)")
    search_steps: int = setting(8, "linear-probe: interval-halving steps around the best C (CoOp lpclip: 8)")
    max_iter: int = setting(1000, "linear-probe: L-BFGS iterations per fit (CoOp lpclip: 1000)")
    c: float = setting(0.316, "linear-probe: C when nothing can validate it (1 shot, no val list); CLIP README")


@dataclass
class TipConfig:
    """Tip-Adapter (Zhang et al., ECCV 2022), gaopengcuhk/Tip-Adapter configs/*.yaml and main.py."""

    alpha: float = setting(1.17, "tip-adapter: residual ratio alpha (configs: init_alpha 1.17)")
    beta: float = setting(1.0, "tip-adapter: sharpness beta (configs: init_beta 1)")
    augment_epochs: int = setting(10, "tip-adapter: augmented views averaged into each cache key (augment_epoch)")
    crop_scale: tuple[float, float] = setting((0.5, 1.0), "tip-adapter: RandomResizedCrop scale of the augmented "
                                              "views (main.py)")
    search: bool = setting(True, "tip-adapter: search alpha, beta on validation images (search_hp)")
    search_scale: tuple[float, float] = setting((7.0, 3.0), "tip-adapter: search ranges of beta, alpha (search_scale)")
    search_steps: tuple[int, int] = setting((200, 20), "tip-adapter: grid steps of beta, alpha (search_step)")


@dataclass
class TipFConfig:
    """Tip-Adapter-F: the cache keys fine-tuned (main.py run_tip_adapter_F)."""

    lr: float = setting(1e-3, "tip-adapter-f: AdamW learning rate (configs: lr 0.001)")
    eps: float = setting(1e-4, "tip-adapter-f: AdamW eps (main.py)")
    weight_decay: float = setting(0.01, "tip-adapter-f: AdamW weight decay (PyTorch's default, as main.py)")
    epochs: int = setting(20, "tip-adapter-f: epochs (configs: train_epoch 20)")
    batch: int = setting(256, "tip-adapter-f: images per step (main.py: 256)")


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
    """What each prompt method sets for itself: the words its context starts from and its SGD
    schedule. A method's group subclasses it with the values of the method's official config as
    class keywords, which become the defaults of these fields in the subclass (`__init_subclass__`):

        @dataclass
        class CocoopConfig(PromptMethodConfig, ctx_init="a photo of a", lr=0.002, batch=1, epochs=10): ...
    """

    ctx_init: str = setting("a photo of a", "words initialising the context (the method's TRAINER.*.CTX_INIT; "
                            "empty: random N(0, 0.02) vectors)")
    lr: float = setting(0.002, "SGD learning rate (the method's OPTIM.LR)")
    batch: int = setting(32, "images per step (the method's DATALOADER.TRAIN_X.BATCH_SIZE)")
    epochs: int = setting(10, "epochs (the method's OPTIM.MAX_EPOCH)")

    def __init_subclass__(cls, **official) -> None:
        super().__init_subclass__()
        shared_fields = PromptMethodConfig.__dataclass_fields__
        for name, value in official.items():
            if name not in shared_fields:
                raise TypeError(f"{cls.__name__}: {name!r} is not a field of PromptMethodConfig")
            shared = shared_fields[name]
            cls.__annotations__[name] = shared.type  # the subclass's own: @dataclass redeclares the field
            setattr(cls, name, dataclasses.field(default=value, metadata=shared.metadata))


@dataclass
class CoopConfig(PromptMethodConfig, ctx_init="", lr=0.002, batch=32):
    """CoOp (Zhou et al., IJCV 2022), KaiyangZhou/CoOp configs/trainers/CoOp/vit_b16*.yaml, scripts/coop/main.sh."""

    epochs: int | None = setting(None, "coop: epochs (default: 50 at 1 shot, 100 at 2-4 shots, 200 above; "
                                 "vit_b16_ep50 / _ep100 / vit_b16)")
    n_ctx: int = setting(16, "coop: context vectors (few-shot protocol: 16)")
    csc: bool = setting(False, "coop: one context per class (CSC)")


@dataclass
class KgCoopConfig(PromptMethodConfig, ctx_init="a photo of a", lr=0.002, batch=128, epochs=100):
    """KgCoOp (Yao et al., CVPR 2023), htyao89/KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml, scripts."""

    lambda_: float = setting(8.0, "kgcoop: weight of the knowledge-guided loss (TRAINER.COOP.W 8.0)", flag="--lambda",
                             metavar="LAMBDA")


@dataclass
class CocoopConfig(PromptMethodConfig, ctx_init="a photo of a", lr=0.002, batch=1, epochs=10):
    """CoCoOp (Zhou et al., CVPR 2022), configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml (4 context
    vectors)."""


@dataclass
class MapleConfig(PromptMethodConfig, ctx_init="a photo of a", lr=0.0035, batch=4, epochs=5):
    """MaPLe (Khattak et al., CVPR 2023), configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml."""

    n_ctx: int = setting(2, "maple: context vectors per layer (N_CTX 2)")
    depth: int = setting(9, "maple: prompted layers in each tower, capped at the towers' depth (PROMPT_DEPTH 9)")


@dataclass
class PromptSrcConfig(PromptMethodConfig, ctx_init="a photo of a", lr=0.0025, batch=4, epochs=50):
    """PromptSRC (Khattak et al., ICCV 2023), configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml."""

    n_ctx_text: int = setting(4, "promptsrc: language prompt tokens (N_CTX_TEXT 4)")
    n_ctx_vision: int = setting(4, "promptsrc: vision prompt tokens (N_CTX_VISION 4)")
    depth_text: int = setting(9, "promptsrc: prompted text layers, capped at the tower's depth (9)")
    depth_vision: int = setting(9, "promptsrc: prompted vision layers, capped at the tower's depth (9)")
    text_weight: float = setting(25.0, "promptsrc: weight of the L1 text-feature agreement (TEXT_LOSS_WEIGHT 25)")
    image_weight: float = setting(10.0, "promptsrc: weight of the L1 image-feature agreement (IMAGE_LOSS_WEIGHT 10)")
    gpa_mean: float = setting(30.0, "promptsrc: mean epoch of the Gaussian prompt aggregation (GPA_MEAN 30; "
                              "the config gives 45 for Cars, Flowers, Aircraft, DTD, EuroSAT)")
    gpa_std: float = setting(30.0, "promptsrc: std of the Gaussian prompt aggregation (GPA_STD 30; 5 for those)")


@dataclass
class ClipJob:
    """One CLIP method on one split, shots and seed: train (when it learns), then evaluate."""

    method: str = setting(MISSING, "the CLIP method (a registered method of the clip family)")
    data: str = setting(MISSING, "split JSON (train list; its test list is the test set) or class-per-folder dir",
                        flag="", identity=False)
    out: str = setting(MISSING, "run folder", identity=False)
    shots: int = setting(16, "support images per class (drawn as GCPL draws them for the seed)")
    seed: int = setting(0, "seeds the shots, the initial prompts and every training draw")
    template: str = setting("a photo of a {}.", "prompt with one {} for the class name: zero-shot CLIP's prompt, "
                            "the hand-crafted prompt of KgCoOp / PromptSRC, Tip-Adapter's classifier")
    model: str | None = setting(None, f"CLIPModel hub id, local folder, or 'tiny' (the bundled tiny CLIP); default "
                                f"{DEFAULT_CLIP_MODEL} (the bundled one when HF_HUB_OFFLINE=1)")
    device: str | None = setting(None, "cpu, cuda or cuda:N (default: cuda when available)", identity=False)
    dtype: str | None = setting(None, "precision of the frozen CLIP (default: bf16 on CUDA, fp32 on CPU)",
                                choices=("fp32", "bf16", "fp16"))
    limit: int | None = setting(None, "score a seeded random subset of N test images")
    eval_seed: int | None = setting(None, "seed of the --limit subset (default: --seed)")
    allow_fewer: bool = setting(False, "classes with fewer than --shots images use all they have")
    strict: bool = setting(False, "unreadable images are errors instead of warnings", identity=False)
    test_data: str | None = setting(None, "test images (split JSON's test list or class folder); default: the "
                                    "data's test list (a class folder: all its images)", identity=False)
    eval_batch: int = setting(64, "test images per forward pass", identity=False)
    checkpoint_every: int = setting(1, "epochs between training checkpoints", identity=False)
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

    def __post_init__(self):
        if self.method not in METHODS or METHODS[self.method].family != "clip":
            clip = ", ".join(n for n, m in METHODS.items() if m.family == "clip")
            raise GcplError(f"--method {self.method!r} is not a CLIP method; use one of {clip}")
        check_template(self.template)
        for name in ("shots", "eval_batch", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise GcplError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise GcplError(f"--limit must be a positive integer, got {self.limit!r}")

    @property
    def test_seed(self) -> int:
        return self.seed if self.eval_seed is None else self.eval_seed


def job_identity(job: ClipJob) -> dict:
    """The identity settings of a job: the shared ones and the groups of its method only, a group's
    settings under their dests (coop.coop_epochs: the option --coop-epochs)."""
    ident = identity(job)
    out = {}
    for f in dataclasses.fields(job):
        if f.name not in ident:
            continue
        if not dataclasses.is_dataclass(getattr(job, f.name)):
            out[f.name] = ident[f.name]
        elif f.name in METHODS[job.method].groups:
            out[f.name] = {group_prefix(f) + k: v for k, v in ident[f.name].items()}
    return out


# Before the groups had prefixes (gcpl.settings), each group's fields carried one in their names
# and config.json stored them so: group -> that prefix (coop.coop_epochs is coop.epochs today,
# kgcoop.kg_lambda is kgcoop.lambda_: a Python keyword's trailing "_" was not in the old name).
OLD_PREFIXES = {"validation": "val_", "linear_probe": "lp_", "tip": "tip_", "tip_f": "tipf_", "prompt": "prompt_",
                "coop": "coop_", "kgcoop": "kg_", "cocoop": "cocoop_", "maple": "maple_", "promptsrc": "src_"}


def upgrade_settings(settings: dict) -> dict:
    """A ClipJob's stored settings (config.json "settings") with the group field names of older
    run folders renamed to today's; today's names pass unchanged."""
    out = dict(settings)
    types = field_types(ClipJob)
    for group, prefix in OLD_PREFIXES.items():
        if isinstance(out.get(group), dict):
            renamed = {prefix + f.name.rstrip("_"): f.name for f in dataclasses.fields(types[group])}
            out[group] = {renamed.get(k, k): v for k, v in out[group].items()}
    return out
