"""Equivalence tests for token training: frozen weights, batched == per-class, resumed == uninterrupted."""

from __future__ import annotations

import pytest
import torch

from gcpl.data.images import load_batch
from gcpl.data.splits import read_samples
from gcpl.io import read_jsonl
from gcpl.latents import encode
from gcpl.trainer import TrainConfig, Trainer, run_training

CLASSES = ["red", "green", "blue"]


def _support(backbone, folder, classes=CLASSES):
    _, samples = read_samples(folder, "train")
    samples = [s for s in samples if s.class_name in classes]
    loaded = load_batch([s.path for s in samples], backbone.resolution)
    stats = encode(backbone.vae, loaded.pixels, flip=True)
    labels = torch.tensor([classes.index(s.class_name) for s in samples])
    return stats, labels


def _train(backbone, folder, classes, steps=3, **kw):
    stats, labels = _support(backbone, folder, classes)
    cfg = TrainConfig(template="a photo of {}.", init_word="object", steps=steps, lr=5e-2, seed=7, **kw)
    trainer = Trainer(backbone, classes, stats, labels, cfg)
    return run_training(trainer, progress=False).vectors.detach().clone()


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_only_class_rows_change(backbone, class_folder):
    from gcpl.tokens import install_tokens, token_names

    before = {m: _snapshot(getattr(backbone, m)) for m in ("text_encoder", "unet", "vae")}
    vectors = _train(backbone, class_folder, CLASSES)
    init_id = backbone.tokenizer("object", add_special_tokens=False).input_ids[0]
    init = backbone.text_encoder.get_input_embeddings().weight[init_id]
    assert not torch.allclose(vectors, init.expand_as(vectors)), "training did not move the class vectors"
    for m in ("text_encoder", "unet", "vae"):  # frozen during training, bit for bit
        after = _snapshot(getattr(backbone, m))
        assert all(torch.equal(before[m][k], after[k]) for k in before[m]), m

    # Installing the tokens adds rows; every pre-existing row stays bit-identical.
    import copy

    te = copy.deepcopy(backbone.text_encoder)
    tok = copy.deepcopy(backbone.tokenizer)
    tokens = token_names(CLASSES, tok)
    ids = install_tokens(tok, te, tokens, vectors)
    table = te.get_input_embeddings().weight
    old = before["text_encoder"]["embeddings.token_embedding.weight"]
    assert torch.equal(table[: old.shape[0]], old)
    assert torch.equal(table[ids], vectors)


def test_batched_gcpl_equals_single_class_runs(backbone, class_folder):
    together = _train(backbone, class_folder, CLASSES)
    for c, name in enumerate(CLASSES):
        alone = _train(backbone, class_folder, [name])
        torch.testing.assert_close(together[c : c + 1], alone, rtol=1e-4, atol=1e-5)
    # the gradient itself (not only Adam's scale-free update) equals the single-class one
    stats, labels = _support(backbone, class_folder, CLASSES)
    cfg = TrainConfig(template="a photo of {}.", steps=1, seed=7)
    tr = Trainer(backbone, CLASSES, stats, labels, cfg)
    st = tr.new_state()
    tr._gcpl_step(st)
    for c, name in enumerate(CLASSES):
        s1, l1 = _support(backbone, class_folder, [name])
        t1 = Trainer(backbone, [name], s1, l1, cfg)
        st1 = t1.new_state()
        t1._gcpl_step(st1)
        torch.testing.assert_close(st.vectors.grad[c : c + 1], st1.vectors.grad, rtol=1e-4, atol=1e-7)
    # and micro-batching (one class per UNet call) changes nothing either
    chunked = _train(backbone, class_folder, CLASSES, max_batch=4)
    torch.testing.assert_close(chunked, together, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["gcpl", "comple"])
def test_resumed_equals_uninterrupted(backbone, class_folder, tmp_path, monkeypatch, method):
    from gcpl.trainer import load_checkpoint

    stats, labels = _support(backbone, class_folder)
    cfg = TrainConfig(method=method, template="a photo of {}.", steps=5, lr=5e-2, seed=3, checkpoint_every=2,
                      log_every=1)
    straight = run_training(Trainer(backbone, CLASSES, stats, labels, cfg), progress=False).vectors.detach().clone()

    out = tmp_path / "run"
    trainer = Trainer(backbone, CLASSES, stats, labels, cfg)
    real_step = Trainer.step

    def crashing_step(self, st):
        if st.step == 3:
            raise RuntimeError("killed")  # a crash loses the steps since the last checkpoint
        return real_step(self, st)

    monkeypatch.setattr(Trainer, "step", crashing_step)
    with pytest.raises(RuntimeError):
        run_training(trainer, out, progress=False)
    monkeypatch.setattr(Trainer, "step", real_step)
    st = trainer.new_state()
    load_checkpoint(out / "checkpoint", st)
    assert st.step == 2
    resumed = run_training(Trainer(backbone, CLASSES, stats, labels, cfg), out, resume=True, progress=False)
    assert torch.equal(resumed.vectors.detach(), straight)
    steps = [r["step"] for r in read_jsonl(out / "train_log.jsonl")]
    assert steps == [1, 2, 3, 4, 5]


def test_ctrl_c_checkpoints_the_finished_step_and_resumes_exactly(backbone, class_folder, tmp_path, monkeypatch):
    """Ctrl-C during step 4 lets the step finish, writes a checkpoint at step 4 (not the last
    periodic one, at 2) and stops; resuming gives the uninterrupted vectors."""
    import os
    import signal

    from gcpl.errors import Interrupted
    from gcpl.trainer import checkpoint_step

    stats, labels = _support(backbone, class_folder)
    cfg = TrainConfig(template="a photo of {}.", steps=6, lr=5e-2, seed=3, checkpoint_every=2, log_every=1)
    straight = run_training(Trainer(backbone, CLASSES, stats, labels, cfg), progress=False).vectors.detach().clone()
    out = tmp_path / "run"
    real_step = Trainer.step

    def interrupted_step(self, st):
        if st.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the step
        return real_step(self, st)

    monkeypatch.setattr(Trainer, "step", interrupted_step)
    with pytest.raises(Interrupted, match="checkpoint saved at step 4 of 6"):
        run_training(Trainer(backbone, CLASSES, stats, labels, cfg), out, progress=False)
    monkeypatch.setattr(Trainer, "step", real_step)
    assert checkpoint_step(out / "checkpoint") == 4
    resumed = run_training(Trainer(backbone, CLASSES, stats, labels, cfg), out, resume=True, progress=False)
    assert torch.equal(resumed.vectors.detach(), straight)
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_comple_trains_all_tokens(backbone, class_folder):
    vectors = _train(backbone, class_folder, CLASSES, method="comple", batch=4, steps=4)
    init = backbone.text_encoder.get_input_embeddings().weight[
        backbone.tokenizer("object", add_special_tokens=False).input_ids[0]]
    moved = (vectors - init).abs().sum(1) > 0
    assert moved.sum() >= 2
