"""The `paper` preset reproduces the authors' released training code (soumitri2001/GCPL): one
optimiser step of ours equals the released recipe's step; squashed training images keep the
whole picture; cropped ones are what they always were."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gcpl.data.images import preprocess
from gcpl.trainer import TrainConfig

TEMPLATE = "A photo of a {}, a type of car."  # the released code's cars template


def _images(folder, n=4, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (48, 24) if i % 2 else (24, 40)  # neither square: squash and crop differ
        a = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
        p = folder / f"{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    return paths


def test_paper_preset_resolves_to_the_released_recipe():
    gcpl = TrainConfig(preset="paper").resolved({"gcpl": {"lr": 5e-3, "steps": 300}})  # the preset beats the model
    assert (gcpl.lr, gcpl.steps, gcpl.batch, gcpl.groups, gcpl.train_resize) == (2e-3, 500, 4, 1, "squash")
    comple = TrainConfig(method="comple", preset="paper").resolved()
    assert (comple.lr, comple.steps, comple.batch, comple.lam, comple.train_resize) == (1e-3, 4000, 4, 1e-3, "squash")
    assert TrainConfig(preset="paper", lr=1e-4, train_resize="crop").resolved().lr == 1e-4  # explicit wins
    default = TrainConfig().resolved()
    assert (default.lr, default.steps, default.train_resize) == (5e-4, 500, "crop")  # the paper's text


def test_one_paper_step_equals_the_released_recipe_step(tmp_path):
    """Ours: one GCPL step of 4 images of one class, lr 2e-3, a (1, D) vector in AdamW. Released:
    four single-image micro-batches, each loss / 4 (gradient accumulation), lr 5e-4 scaled by 4,
    the whole token-embedding table in AdamW (eps 1e-8, weight decay 1e-2) with every other row
    restored after the step. Same draws (image, flip, latent noise, timestep, noise)."""
    from diffusers import DDPMScheduler

    from gcpl.backbone import BUNDLED_MODEL_DIR, load_backbone
    from gcpl.latents import encode_files
    from gcpl.tokens import install_tokens
    from gcpl.trainer import Trainer, _draw

    torch.manual_seed(0)
    bb = load_backbone("tiny", "cpu")
    cfg = TrainConfig(preset="paper", template=TEMPLATE, init_word="car", seed=3).resolved()
    stats, _, _ = encode_files(bb.vae, _images(tmp_path), bb.resolution, flip=True, resize=cfg.train_resize)
    trainer = Trainer(bb, ["Acura RL Sedan 2012"], stats, torch.zeros(4, dtype=torch.long), cfg)
    st = trainer.new_state()
    init = st.vectors.detach().clone()
    rng_state = st.generators[0].get_state()
    trainer.step(st)
    ours, ours_grad = st.vectors.detach()[0], st.vectors.grad[0]

    # the released recipe on the same draws
    g = torch.Generator()
    g.set_state(rng_state)
    idx, view, z, t, noise = _draw(g, len(stats), cfg.batch, stats, cfg.flip, bb.num_train_timesteps)
    tokenizer, te = copy.deepcopy(bb.tokenizer), copy.deepcopy(bb.text_encoder)
    (row,) = install_tokens(tokenizer, te, ["<acura-rl-sedan-2012>"], init)
    table = te.get_input_embeddings().weight
    table.requires_grad_(True)
    before = table.detach().clone()
    accum, batch, base_lr = 4, 1, 5e-4
    opt = torch.optim.AdamW([table], lr=base_lr * accum * batch, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    sched = DDPMScheduler.from_pretrained(str(BUNDLED_MODEL_DIR), subfolder="scheduler")
    ids = tokenizer(TEMPLATE.format("<acura-rl-sedan-2012>"), padding="max_length", truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    for i in range(accum):
        x0 = (stats.mean[idx[i], view[i]] + stats.std[idx[i], view[i]] * z[i])[None] * bb.scaling_factor
        noisy = sched.add_noise(x0, noise[i : i + 1], t[i : i + 1])
        pred = bb.unet(noisy, t[i : i + 1], encoder_hidden_states=te(ids)[0]).sample
        (F.mse_loss(pred.float(), noise[i : i + 1].float()) / accum).backward()
    released_grad = table.grad[row].clone()
    opt.step()
    with torch.no_grad():
        others = torch.arange(len(table)) != row
        table[others] = before[others]

    assert torch.equal(table.detach()[others], before[others])
    torch.testing.assert_close(ours_grad, released_grad, rtol=1e-4, atol=1e-8)  # the accumulation's 1/4
    assert (table.detach()[row] - ours).abs().max().item() <= 1e-6
    assert (ours - init[0]).abs().max().item() == pytest.approx(2e-3, rel=0.05)  # the step is the scaled lr


def test_squash_keeps_every_column_and_crop_is_unchanged():
    w, h = 60, 20  # wide: a crop drops the outer columns
    a = np.full((h, w, 3), 128, np.uint8)
    a[:, :3] = (255, 0, 0)  # red left edge
    a[:, -3:] = (0, 0, 255)  # blue right edge
    img = Image.fromarray(a)
    squash = preprocess(img, 16, "squash")
    assert squash[0, :, 0].mean() > 0.5 and squash[2, :, -1].mean() > 0.5  # both edges are still there
    assert squash[0, :, 0].mean() > squash[0, :, 8].mean() + 0.5
    crop = preprocess(img, 16, "crop")
    assert crop[0, :, 0].mean() < 0.1 and crop[2, :, -1].mean() < 0.1  # the edges were cropped away
    assert torch.equal(crop, preprocess(img, 16))  # crop is the default, as before
    # crop is torchvision's Resize(16, BICUBIC) + CenterCrop(16), done by hand as before
    resized = img.resize((48, 16), Image.Resampling.BICUBIC).crop((16, 0, 32, 16))
    want = torch.from_numpy(np.asarray(resized, np.float32).transpose(2, 0, 1) / 127.5 - 1)
    torch.testing.assert_close(crop, want, rtol=0, atol=1e-6)
