"""The settings of a CLIP run (`ClipJob`), every field declared with gcpl.settings.setting.

Defaults are the official ones of each method (sources in each field's help and in
docs/CLIP.md); nested groups hold one method family's hyperparameters, with prefixed names so
that every command-line option is unique when the groups are flattened (gcpl.cli.options).
Only the groups of the chosen method belong to a run's identity (`job_identity`): a CoOp run is
not refused because a Tip-Adapter default changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass

from ..errors import GcplError
from ..settings import identity, setting
from .model import DEFAULT_CLIP_MODEL

METHODS = ("clip-zs", "linear-probe", "tip-adapter", "tip-adapter-f", "coop", "kgcoop", "cocoop", "maple", "promptsrc")
TRAINED = ("tip-adapter-f", "coop", "kgcoop", "cocoop", "maple", "promptsrc")  # gradient training, checkpoints
USES_SHOTS = METHODS[1:]  # all but zero-shot CLIP
# which nested groups of ClipJob belong to each method's identity
GROUPS = {
    "clip-zs": (),
    "linear-probe": ("validation", "linear_probe"),
    "tip-adapter": ("validation", "tip"),
    "tip-adapter-f": ("validation", "tip", "tip_f"),
    "coop": ("prompt", "coop"),
    "kgcoop": ("prompt", "kgcoop"),
    "cocoop": ("prompt", "cocoop"),
    "maple": ("prompt", "maple"),
    "promptsrc": ("prompt", "promptsrc"),
}


@dataclass
class ValidationConfig:
    """Where linear-probe and Tip-Adapter choose their hyperparameters."""

    val_source: str = setting(
        "shots", "linear-probe / tip-adapter: validate on folds of the support shots (no extra labels) or on the "
        "split's val list (CoOp / Tip-Adapter protocol)", choices=("shots", "split"))
    val_shots: int = setting(4, "val-source split: validation images per class, min(shots, this) (CoOp: 4)")
    cv_folds: int = setting(4, "val-source shots: at most this many folds of the support set (one shot per class "
                            "in each fold at 4 or fewer shots)")


@dataclass
class LinearProbeConfig:
    """CLIP paper (Radford et al. 2021, appendix A.3) / CoOp's lpclip/linear_probe.py."""

    lp_c_grid: tuple[float, ...] = setting(
        (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6), "linear-probe: first sweep of the inverse L2 strength C (CLIP A.3)")
    lp_search_steps: int = setting(8, "linear-probe: interval-halving steps around the best C (CoOp lpclip: 8)")
    lp_max_iter: int = setting(1000, "linear-probe: L-BFGS iterations per fit (CoOp lpclip: 1000)")
    lp_c: float = setting(0.316, "linear-probe: C when nothing can validate it (1 shot, no val list); CLIP README")


@dataclass
class TipConfig:
    """Tip-Adapter (Zhang et al., ECCV 2022), gaopengcuhk/Tip-Adapter configs/*.yaml and main.py."""

    tip_alpha: float = setting(1.17, "tip-adapter: residual ratio alpha (configs: init_alpha 1.17)")
    tip_beta: float = setting(1.0, "tip-adapter: sharpness beta (configs: init_beta 1)")
    tip_augment_epochs: int = setting(10, "tip-adapter: augmented views averaged into each cache key (augment_epoch)")
    tip_crop_scale: tuple[float, float] = setting((0.5, 1.0), "tip-adapter: RandomResizedCrop scale of the "
                                                  "augmented views (main.py)")
    tip_search: bool = setting(True, "tip-adapter: search alpha, beta on validation images (search_hp)",
                               flag="--no-tip-search")
    tip_search_scale: tuple[float, float] = setting((7.0, 3.0), "tip-adapter: search ranges of beta, alpha "
                                                    "(search_scale)")
    tip_search_steps: tuple[int, int] = setting((200, 20), "tip-adapter: grid steps of beta, alpha (search_step)")


@dataclass
class TipFConfig:
    """Tip-Adapter-F: the cache keys fine-tuned (main.py run_tip_adapter_F)."""

    tipf_lr: float = setting(1e-3, "tip-adapter-f: AdamW learning rate (configs: lr 0.001)")
    tipf_eps: float = setting(1e-4, "tip-adapter-f: AdamW eps (main.py)")
    tipf_weight_decay: float = setting(0.01, "tip-adapter-f: AdamW weight decay (PyTorch's default, as main.py)")
    tipf_epochs: int = setting(20, "tip-adapter-f: epochs (configs: train_epoch 20)")
    tipf_batch: int = setting(256, "tip-adapter-f: images per step (main.py: 256)")


@dataclass
class PromptTrainConfig:
    """The optimisation every prompt learner shares: Dassl's SGD with a constant warm-up epoch
    and a per-epoch cosine schedule (CoOp, CoCoOp, KgCoOp, MaPLe, PromptSRC configs)."""

    prompt_momentum: float = setting(0.9, "prompt methods: SGD momentum (Dassl default)")
    prompt_weight_decay: float = setting(5e-4, "prompt methods: SGD weight decay (Dassl default)")
    prompt_warmup_epochs: int = setting(1, "prompt methods: constant warm-up epochs (WARMUP_EPOCH 1)")
    prompt_warmup_lr: float = setting(1e-5, "prompt methods: warm-up learning rate (WARMUP_CONS_LR 1e-5)")
    prompt_crop_scale: tuple[float, float] = setting((0.08, 1.0), "prompt methods: RandomResizedCrop scale "
                                                     "(Dassl INPUT.RRCROP_SCALE)")
    prompt_flip: bool = setting(True, "prompt methods: random horizontal flips", flag="--no-prompt-flip")


@dataclass
class CoopConfig:
    """CoOp (Zhou et al., IJCV 2022), KaiyangZhou/CoOp configs/trainers/CoOp/vit_b16*.yaml, scripts/coop/main.sh."""

    coop_n_ctx: int = setting(16, "coop: context vectors (few-shot protocol: 16)")
    coop_ctx_init: str = setting("", "coop: words initialising the context (default: random, N(0, 0.02))")
    coop_csc: bool = setting(False, "coop: one context per class (CSC)")
    coop_lr: float = setting(0.002, "coop: SGD learning rate (0.002)")
    coop_batch: int = setting(32, "coop: images per step (32)")
    coop_epochs: int | None = setting(None, "coop: epochs (default: 50 at 1 shot, 100 at 2-4 shots, 200 above; "
                                      "vit_b16_ep50 / _ep100 / vit_b16)")


@dataclass
class KgCoopConfig:
    """KgCoOp (Yao et al., CVPR 2023), htyao89/KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml, scripts."""

    kg_ctx_init: str = setting("a photo of a", "kgcoop: words initialising the context (CTX_INIT)")
    kg_lambda: float = setting(8.0, "kgcoop: weight of the knowledge-guided loss (TRAINER.COOP.W 8.0)")
    kg_lr: float = setting(0.002, "kgcoop: SGD learning rate (0.002)")
    kg_batch: int = setting(128, "kgcoop: images per step (128)")
    kg_epochs: int = setting(100, "kgcoop: epochs (100)")


@dataclass
class CocoopConfig:
    """CoCoOp (Zhou et al., CVPR 2022), configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml."""

    cocoop_ctx_init: str = setting("a photo of a", "cocoop: words initialising the context (4 vectors)")
    cocoop_lr: float = setting(0.002, "cocoop: SGD learning rate (0.002)")
    cocoop_batch: int = setting(1, "cocoop: images per step (1)")
    cocoop_epochs: int = setting(10, "cocoop: epochs (10)")


@dataclass
class MapleConfig:
    """MaPLe (Khattak et al., CVPR 2023), configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml."""

    maple_n_ctx: int = setting(2, "maple: context vectors per layer (N_CTX 2)")
    maple_ctx_init: str = setting("a photo of a", "maple: words initialising the context (CTX_INIT)")
    maple_depth: int = setting(9, "maple: prompted layers in each tower, capped at the towers' depth (PROMPT_DEPTH 9)")
    maple_lr: float = setting(0.0035, "maple: SGD learning rate (0.0035)")
    maple_batch: int = setting(4, "maple: images per step (4)")
    maple_epochs: int = setting(5, "maple: epochs (5)")


@dataclass
class PromptSrcConfig:
    """PromptSRC (Khattak et al., ICCV 2023), configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml."""

    src_n_ctx_text: int = setting(4, "promptsrc: language prompt tokens (N_CTX_TEXT 4)")
    src_n_ctx_vision: int = setting(4, "promptsrc: vision prompt tokens (N_CTX_VISION 4)")
    src_ctx_init: str = setting("a photo of a", "promptsrc: words initialising the language context")
    src_depth_text: int = setting(9, "promptsrc: prompted text layers, capped at the tower's depth (9)")
    src_depth_vision: int = setting(9, "promptsrc: prompted vision layers, capped at the tower's depth (9)")
    src_lr: float = setting(0.0025, "promptsrc: SGD learning rate (0.0025)")
    src_batch: int = setting(4, "promptsrc: images per step (4)")
    src_epochs: int = setting(50, "promptsrc: epochs (few-shot config: 50)")
    src_text_weight: float = setting(25.0, "promptsrc: weight of the L1 text-feature agreement (TEXT_LOSS_WEIGHT 25)")
    src_image_weight: float = setting(10.0, "promptsrc: weight of the L1 image-feature agreement (IMAGE_LOSS_WEIGHT 10)")
    src_gpa_mean: float = setting(30.0, "promptsrc: mean epoch of the Gaussian prompt aggregation (GPA_MEAN 30; "
                                  "the config gives 45 for Cars, Flowers, Aircraft, DTD, EuroSAT)")
    src_gpa_std: float = setting(30.0, "promptsrc: std of the Gaussian prompt aggregation (GPA_STD 30; 5 for those)")


@dataclass
class ClipJob:
    """One CLIP method on one split, shots and seed: train (when it learns), then evaluate."""

    method: str = setting(MISSING, "the CLIP method", choices=METHODS)
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
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    linear_probe: LinearProbeConfig = dataclasses.field(default_factory=LinearProbeConfig)
    tip: TipConfig = dataclasses.field(default_factory=TipConfig)
    tip_f: TipFConfig = dataclasses.field(default_factory=TipFConfig)
    prompt: PromptTrainConfig = dataclasses.field(default_factory=PromptTrainConfig)
    coop: CoopConfig = dataclasses.field(default_factory=CoopConfig)
    kgcoop: KgCoopConfig = dataclasses.field(default_factory=KgCoopConfig)
    cocoop: CocoopConfig = dataclasses.field(default_factory=CocoopConfig)
    maple: MapleConfig = dataclasses.field(default_factory=MapleConfig)
    promptsrc: PromptSrcConfig = dataclasses.field(default_factory=PromptSrcConfig)

    def __post_init__(self):
        if self.method not in METHODS:
            raise GcplError(f"--method {self.method!r} is not a CLIP method; use one of {', '.join(METHODS)}")
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


def check_template(template: str) -> str:
    if not isinstance(template, str) or template.count("{}") != 1 or template.replace("{}", "").count("{") \
            or template.replace("{}", "").count("}"):
        raise GcplError(f"--template must contain exactly one {{}} for the class name (and no other braces), "
                        f"got {template!r}")
    return template


def job_identity(job: ClipJob) -> dict:
    """The identity settings of a job: the shared ones and the groups of its method only."""
    ident = identity(job)
    groups = {f.name for f in dataclasses.fields(job) if dataclasses.is_dataclass(getattr(job, f.name))}
    keep = set(GROUPS[job.method])
    return {k: v for k, v in ident.items() if k not in groups or k in keep}
