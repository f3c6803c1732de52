"""Deep prompts in both towers: MaPLe and PromptSRC (training as in gcpl.clip.coop).

MaPLe (Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023;
muzairkhattak/multimodal-prompt-learning trainers/maple.py, clip/model.py,
configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml): 2 language context vectors from
"a photo" (the first 2 tokens of "a photo of a"; "of a <class>." stays text), deep language
prompts (2 tokens, N(0, 0.02^2)) replacing positions 1..2 before text layers 1..J-1, and the
vision prompts of every layer 0..J-1 produced from the language prompts of that layer by the
coupling function (a linear map text width -> vision width per layer); the vision prompts are
appended after the patch tokens (before pre_layrnorm) and replaced before each vision layer
1..J-1. J = 9 (PROMPT_DEPTH), capped at the depth of the shallower tower; lr 0.0035, batch 4,
5 epochs. The config is the paper's base-to-novel one (MaPLe publishes no few-shot config).

PromptSRC (Khattak et al., "Self-regulating Prompts: Foundational Model Adaptation without
Forgetting", ICCV 2023; muzairkhattak/PromptSRC trainers/promptsrc.py,
configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml): independent deep
prompts in both towers (IVLP): 4 language context vectors from "a photo of a" plus deep
language prompts before text layers 1..8, 4 vision tokens appended at the input plus deep vision
prompts before vision layers 1..8 (depth 9 each, capped at the towers' depth), all N(0, 0.02^2)
but the initialised context. Loss = CE + L_SCL with
    L_SCL = 25 * L1(text features, frozen text features)      (both L2-normalised, mean)
          + 10 * L1(image features, frozen image features)    (both L2-normalised, mean)
          + KL(softmax(frozen logits) || softmax(prompted logits)), summed / (batch * classes)
where the frozen image features come from the same augmented views through the unprompted
CLIP and the frozen logits are exp(logit_scale) * cos(frozen image, frozen text). Gaussian
prompt aggregation (GPA): after epoch e (1..E) the prompts are added to a running sum with
weight w_e = N(e; mu, sigma) / sum_k N(k; mu, sigma); the aggregate is the final model.
mu, sigma per dataset (the few-shot config: 30, 30 for ImageNet-like data; 45, 5 for StanfordCars,
Flowers102, FGVCAircraft, DTD and EuroSAT; gcpl.clip.official); lr 0.0025, batch 4, 50 epochs.
The frozen text features (the L1 text target and the KL teacher's classifier) are the mean over
CLIP's 60 ImageNet templates of each class's text features, normalised after averaging
(trainers/promptsrc.py:121-128, 200; `promptsrc.teacher` ensemble); `single` uses the
hand-crafted prompt alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..method_registry import register_method
from .base import normed
from .coop import PromptMethod
from .features import ensemble_classifier, text_classifier
from .official import IMAGENET_TEMPLATES
from .prompts import MapleCoupling, TextPrompts, VisionPrompts


def prompt_depth(depth: int, *layers: int) -> int:
    """Prompted layers: the configured depth, at least 1, at most every layer of each tower."""
    return max(1, min([depth, *layers]))


def gpa_weights(epochs: int, mean: float, std: float) -> list[float]:
    """PromptSRC's Gaussian aggregation weights of epochs 1..epochs (normalised to sum to 1)."""
    g = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
    total = sum(g)
    return [x / total for x in g]


class MapleLearner(nn.Module):
    def __init__(self, prompts: TextPrompts, coupling: MapleCoupling):
        super().__init__()
        self.prompts, self.coupling = prompts, coupling

    def vision_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.coupling(self.prompts.ctx, list(self.prompts.deep))


@register_method("maple", short="MaPLe", label="MaPLe (coupled deep prompts)",
                 family="clip", trains=True, groups=("text", "prompt", "maple"), demo_seconds=16)
class MaPLe(PromptMethod):
    name = group = "maple"

    def depth(self) -> int:
        return prompt_depth(self.cfg.depth, self.clip.text_layers, self.clip.vision_layers)

    def build(self, g):
        c = self.cfg
        deep = self.depth() - 1
        prompts = TextPrompts(self.clip, self.classes, c.n_ctx, c.ctx_init, deep=deep, generator=g)
        coupling = MapleCoupling(self.clip.text_width, self.clip.vision_width, deep, g, device=self.clip.device)
        return MapleLearner(prompts, coupling)

    def vision_prompts(self):
        return self.learner.vision_prompts()

    def facts(self):
        return {"depth": self.depth(), **super().facts()}


class SrcLearner(nn.Module):
    def __init__(self, prompts: TextPrompts, vision: VisionPrompts):
        super().__init__()
        self.prompts, self.vision = prompts, vision


def scl_loss(text, hand, img, zs_img, logits, zs_logits, text_weight: float, image_weight: float) -> torch.Tensor:
    """PromptSRC's self-regulating consistency loss (all features L2-normalised)."""
    l_text = F.l1_loss(text, hand) * text_weight
    l_image = F.l1_loss(img, zs_img) * image_weight
    l_logits = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum",
                        log_target=True) / logits.numel()
    return l_text + l_image + l_logits


@register_method("promptsrc", short="PromptSRC", label="PromptSRC (self-regulated deep prompts)",
                 family="clip", trains=True, groups=("text", "prompt", "promptsrc"), demo_seconds=179)
class PromptSRC(PromptMethod):
    name = group = "promptsrc"

    def depths(self) -> tuple[int, int]:
        c = self.cfg
        return (prompt_depth(c.depth_text, self.clip.text_layers),
                prompt_depth(c.depth_vision, self.clip.vision_layers))

    def build(self, g):
        c = self.cfg
        dt, dv = self.depths()
        prompts = TextPrompts(self.clip, self.classes, c.n_ctx_text, c.ctx_init, deep=dt - 1, generator=g)
        vision = VisionPrompts(self.clip.vision_width, c.n_ctx_vision, dv - 1, g, device=self.clip.device)
        return SrcLearner(prompts, vision)

    def prepare(self):
        c = self.cfg
        if c.teacher == "ensemble":
            self.hand = ensemble_classifier(self.clip, IMAGENET_TEMPLATES, self.classes)
        else:
            self.hand = text_classifier(self.clip, self.template, self.classes)
        self.weights = gpa_weights(c.epochs, c.gpa_mean, c.gpa_std)
        self.gpa: dict[str, torch.Tensor] | None = None

    # --- Gaussian prompt aggregation over epochs -------------------------------------------------
    def on_epoch_end(self, epoch: int) -> None:
        w = self.weights[epoch]
        cur = {k: v.detach() * w for k, v in self.learner.state_dict().items()}
        self.gpa = cur if self.gpa is None else {k: self.gpa[k] + cur[k] for k in cur}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {f"gpa.{k}": v for k, v in (self.gpa or {}).items()}

    def load_extra(self, tensors: dict[str, torch.Tensor]) -> None:
        gpa = {k[len("gpa."):]: v.to(self.clip.device) for k, v in tensors.items() if k.startswith("gpa.")}
        self.gpa = gpa or None

    def finish_training(self) -> None:
        if self.gpa is not None:
            self.learner.load_state_dict(self.gpa, strict=True)

    # --- forward ----------------------------------------------------------------------------------
    def vision_prompts(self):
        v = self.learner.vision
        return v.shallow, list(v.deep) or None

    def loss(self, views, labels):
        c = self.cfg
        img, text = self.prompted(views)
        scale = self.clip.logit_scale
        logits = scale * img @ text.t()
        with torch.no_grad():
            zs_img = normed(self.clip.encode_images(views))
            zs_logits = scale * zs_img @ self.hand.t()
        return F.cross_entropy(logits, labels) + scl_loss(text, self.hand, img, zs_img, logits, zs_logits,
                                                          c.text_weight, c.image_weight)

    def facts(self):
        dt, dv = self.depths()
        p = self.learner.prompts
        return {"depth_text": dt, "depth_vision": dv, "n_ctx_text": p.n_ctx, "ctx_init": p.initialised_from,
                "prompt": p.prefix_text + " {}.", "gpa_weights": self.weights,
                "frozen_text": "CLIP's 60 ImageNet templates" if self.cfg.teacher == "ensemble" else self.template}

