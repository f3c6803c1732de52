"""Pretraining of gcpl's bundled tiny text-to-image model (`tools/pretrain_tiny.py`).

`corpus`: procedural captioned images (shapes with colours/textures/sizes/positions, FractalDB
categories captioned with their own word); `loop`: VAE stage, latent scale measurement, joint
text-encoder + UNet stage, safetensors checkpoints with exact resume.
"""

from gcpl.pretrain.corpus import CaptionedPool, Corpus, CorpusConfig
from gcpl.pretrain.loop import PretrainConfig, PretrainResult, pretrain, word_probe

__all__ = ["CaptionedPool", "Corpus", "CorpusConfig", "PretrainConfig", "PretrainResult", "pretrain", "word_probe"]
