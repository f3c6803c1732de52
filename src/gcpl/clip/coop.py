"""Prompt learning on a frozen CLIP: CoOp, KgCoOp, CoCoOp (and the training every prompt method
shares).

Shared optimisation (Dassl, the toolbox of all five official codes): SGD (momentum 0.9, weight
decay 5e-4, no Nesterov) on the learnable tensors only, one constant warm-up epoch at 1e-5, then
a per-epoch cosine schedule (gcpl.clip.loop.dassl_lr); training views RandomResizedCrop(scale
(0.08, 1), bicubic) + horizontal flip; the model kept for testing is the last epoch's
(Dassl's TEST.FINAL_MODEL "last_step"). Logits are exp(logit_scale) * cos(image, text).

CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022; KaiyangZhou/CoOp
configs/trainers/CoOp/vit_b16*.yaml and the few-shot runs of COOP.md / scripts/coop/main.sh): 16
context vectors shared by all classes, random N(0, 0.02^2), class token at the end ("X X ... X
<class>."), lr 0.002, batch 32, 50 epochs at 1 shot, 100 at 2 and 4 shots, 200 at 8 and 16.
`coop_csc` gives class-specific contexts; the class-token positions "middle"/"front" are not
implemented (the paper's few-shot runs use "end").

KgCoOp (Yao et al., "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization",
CVPR 2023; htyao89/KgCoOp trainers/kgcoop.py, configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml,
scripts/base2new_train.sh): CoOp with the context initialised from "a photo of a" (4 vectors) and
the loss CE + lambda * L_kg, L_kg = 1 - mean_c cos(w_c, w_c^clip), where w_c are the learned
prompts' text features and w_c^clip those of the hand-crafted prompt (the dataset's prompt of
kgcoop.py CUSTOM_TEMPLATES); lambda 8.0 (scripts/xd_train.sh, the runs at 4 shots on every
dataset), lr 0.002, batch 128, 100 epochs at every shot count. The paper writes L_kg as the mean
squared Euclidean distance of the normalised features, which is 2 (1 - cos): the code's form
(used here, with the code's lambda) is half of it.

CoCoOp (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022;
configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml, trainers/cocoop.py): 4 context
vectors from "a photo of a" shifted per image by pi(x) = MetaNet(normalised image feature)
(Linear(E, E/16) -> ReLU -> Linear(E/16, D)), so each image has its own class prompts; lr 0.002,
batch 1, 10 epochs.

Every value above is a row of gcpl.clip.official's table (file and line of its source), resolved
into the method's settings group before the method runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..method_registry import register_method
from .base import ClipMethod, Support, cosine_logits, normed
from .features import text_classifier
from .loop import EpochLoop, dassl_lr, init_generator
from .prompts import MetaNet, TextPrompts


def kg_loss(text: torch.Tensor, hand: torch.Tensor) -> torch.Tensor:
    """KgCoOp's knowledge-guided regulariser: 1 - mean cosine of learned and hand-crafted text features."""
    return 1.0 - F.cosine_similarity(normed(text), normed(hand), dim=1, eps=1e-7).mean()


def learner_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class PromptMethod(ClipMethod):
    """A learner (nn.Module of learnable tensors) trained with Dassl's SGD schedule. By default it
    scores with CLIP's cosine logits between its learned class prompts (`text_features`) and the
    images encoded with its learned vision prompts (`vision_prompts`, none unless it has some),
    and trains on the cross-entropy of those logits."""

    group = ""  # the ClipJob group of the method's own settings (lr, batch, epochs, its prompts)

    @property
    def cfg(self):
        """The method's settings group (job.clip.coop, job.clip.maple ...), resolved."""
        return getattr(self.settings, self.group)

    def schedule(self) -> tuple[float, int, int]:
        """(lr, batch, epochs) of the method."""
        return self.cfg.lr, self.cfg.batch, self.cfg.epochs

    def build(self, g: torch.Generator) -> nn.Module:
        raise NotImplementedError

    def prepare(self) -> None:
        """Things computed once before training and testing (frozen text features ...)."""

    def finish_training(self) -> None:
        """After the last epoch (PromptSRC: the aggregated prompts)."""

    # --- forward ----------------------------------------------------------------------------------
    def text_prompts(self) -> TextPrompts:
        """The learned text prompts (the learner's `prompts`)."""
        return self.learner.prompts

    def text_features(self) -> torch.Tensor:
        """(C, E) normalised text features of the learned class prompts."""
        return normed(self.text_prompts().features(self.clip))

    def vision_prompts(self) -> tuple:
        """The learned vision prompts, as the arguments encode_images takes after the pixels."""
        return ()

    def prompted(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised image features (B, E), normalised class text features (C, E)), prompted."""
        text = self.text_features()
        return normed(self.clip.encode_images(views, *self.vision_prompts())), text

    def loss(self, views: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        img, text = self.prompted(views)
        return F.cross_entropy(self.clip.logit_scale * img @ text.t(), labels)

    # --- training and testing ---------------------------------------------------------------------
    def fit(self, support: Support, folder: Path, progress: bool = True):
        job, p = self.job, self.settings.prompt
        self.learner = self.build(init_generator(job.seed, self.name))
        self.prepare()
        lr, batch, epochs = self.schedule()
        params = [q for q in self.learner.parameters() if q.requires_grad]
        opt = torch.optim.SGD(params, lr=lr, momentum=p.momentum, weight_decay=p.weight_decay,
                              dampening=0, nesterov=False)
        labels = support.labels.to(self.clip.device)
        self.learner.train()

        def step(idx, g, epoch):
            with torch.no_grad():
                views = support.bank.train_views(idx, g, tuple(p.crop_scale), p.flip)
            return self.loss(views, labels[idx])

        loop = EpochLoop(self.learner, opt, folder / "checkpoint", job.seed, self.name, epochs, len(support.bank),
                         batch, lr_at=lambda e, it, per: dassl_lr(e, lr, epochs, p.warmup_epochs, p.warmup_lr),
                         drop_last=True, checkpoint_every=job.checkpoint_every,
                         on_epoch_end=getattr(self, "on_epoch_end", None),
                         extra_state=getattr(self, "extra_state", None), load_extra=getattr(self, "load_extra", None))
        log = loop.run(step, progress)
        self.finish_training()
        self.learner.eval()
        return learner_state(self.learner), {"lr": lr, "batch": batch, "epochs": epochs, "train_log": log,
                                             **self.facts()}

    def facts(self) -> dict:
        """What the run records of the learned prompts (in learned.safetensors)."""
        return self.text_prompts().facts()

    def load(self, tensors, meta):
        if getattr(self, "learner", None) is None:
            self.learner = self.build(init_generator(self.job.seed, self.name))
            self.prepare()
        self.learner.load_state_dict({k: v.to(self.clip.device) for k, v in tensors.items()}, strict=True)
        self.learner.eval()
        self.ready()

    def ready(self) -> None:
        """After the learned tensors are in place: precompute what testing reuses."""
        with torch.no_grad():
            self.text, self.vprompts = self.text_features(), self.vision_prompts()

    def logits(self, pixels):
        return cosine_logits(self.clip, pixels, self.text, self.vprompts)


@register_method("coop", short="CoOp", label="CoOp (learned context)",
                 family="clip", trains=True, groups=("text", "prompt", "coop"), demo_seconds=127)
class CoOp(PromptMethod):
    name = group = "coop"

    def build(self, g):
        c = self.cfg
        return TextPrompts(self.clip, self.classes, c.n_ctx, c.ctx_init, c.csc, generator=g)

    def text_prompts(self):
        return self.learner  # the learner is the text prompts


@register_method("kgcoop", short="KgCoOp", label="KgCoOp (knowledge-guided context)",
                 family="clip", trains=True, groups=("text", "prompt", "kgcoop"), demo_seconds=40)
class KgCoOp(CoOp):
    name = group = "kgcoop"

    def build(self, g):
        return TextPrompts(self.clip, self.classes, None, self.cfg.ctx_init, generator=g)

    def prepare(self):
        self.hand = text_classifier(self.clip, self.template, self.classes)

    def loss(self, views, labels):
        with torch.no_grad():
            img = normed(self.clip.encode_images(views))
        text = self.learner.features(self.clip)
        ce = F.cross_entropy(self.clip.logit_scale * img @ normed(text).t(), labels)
        return ce + self.cfg.lambda_ * kg_loss(text, self.hand)

    def facts(self):
        return {**super().facts(), "lambda": self.cfg.lambda_, "hand_crafted": self.template}


class CoCoLearner(nn.Module):
    def __init__(self, prompts: TextPrompts, meta: MetaNet):
        super().__init__()
        self.prompts, self.meta_net = prompts, meta


@register_method("cocoop", short="CoCoOp", label="CoCoOp (image-conditional context)",
                 family="clip", trains=True, groups=("text", "prompt", "cocoop"), demo_seconds=87)
class CoCoOp(PromptMethod):
    name = group = "cocoop"
    max_prompts = 4096  # text prompts per forward pass at test time (images x classes)

    def build(self, g):
        prompts = TextPrompts(self.clip, self.classes, None, self.cfg.ctx_init, generator=g)
        meta = MetaNet(self.clip.embed_dim, self.clip.text_width, g, device=self.clip.device)
        return CoCoLearner(prompts, meta)

    def conditional_logits(self, img: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of normalised image features: each image's context = ctx + MetaNet(image)."""
        pl = self.learner.prompts
        ctx = pl.ctx.unsqueeze(0) + self.learner.meta_net(img).unsqueeze(1)  # (B, n, D)
        text = normed(pl.features_per_image(self.clip, ctx))  # (B, C, E)
        return self.clip.logit_scale * torch.einsum("be,bce->bc", img, text)

    def loss(self, views, labels):
        with torch.no_grad():
            img = normed(self.clip.encode_images(views))
        return F.cross_entropy(self.conditional_logits(img), labels)

    def ready(self):
        """Nothing to precompute: each test image conditions its own prompts."""

    def logits(self, pixels):
        with torch.no_grad():
            img = normed(self.clip.encode_images(pixels))
            step = max(1, self.max_prompts // max(1, len(self.classes)))
            return torch.cat([self.conditional_logits(img[i : i + step]) for i in range(0, len(img), step)])
