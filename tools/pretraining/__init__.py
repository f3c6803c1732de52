"""Build tooling (never imported by the runtime package `gcpl`): pretraining of gcpl's bundled
tiny models.

`corpus`: procedural captioned images (shapes with colours/textures/sizes/positions, FractalDB
categories captioned with their own word); `sd`: the tiny Stable Diffusion (VAE stage, latent
scale measurement, joint text-encoder + UNet stage, exact resume); run by `tools/pretrain_tiny.py`.
"""
