"""Build tooling (never imported by the runtime package `gcpl`): pretraining of gcpl's bundled
tiny models on one procedural world.

`corpus`: procedural captioned images (shapes with colours/textures/sizes/positions, FractalDB
categories captioned with their own word) and the held-out probe images; `sd`: the tiny Stable
Diffusion (VAE stage, latent scale measurement, joint text-encoder + UNet stage, the word probe),
run by `tools/pretrain_tiny.py`; `clip`: the tiny CLIP, contrastive on the same images and
captions, run by `tools/pretrain_tiny_clip.py`; `common`: what both share (the settings common to
both runs, random streams, schedule, checkpoints, resume and continuation, EMA); `cli`: the two
scripts' command lines, derived from settings dataclasses, and the commands their model cards
print. Checkpoints are gcpl.checkpoint snapshots; resume is bit-exact.
"""
