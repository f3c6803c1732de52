"""Build tooling (never imported by the runtime package `gcpl`): pretraining of gcpl's bundled
tiny models on one procedural world.

`corpus`: procedural captioned images (shapes with colours/textures/sizes/positions, FractalDB
categories captioned with their own word); `sd`: the tiny Stable Diffusion (VAE stage, latent
scale measurement, joint text-encoder + UNet stage, the word probe), run by
`tools/pretrain_tiny.py`; `clip`: the tiny CLIP, contrastive on the same images and captions, run
by `tools/pretrain_tiny_clip.py`. Checkpoints are gcpl.checkpoint snapshots; resume is bit-exact.
"""
