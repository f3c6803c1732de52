"""Fixtures of the CLIP tests (a tiny random CLIPModel folder built once per session, small image
datasets) and the checks that the tower passes of gcpl.clip equal transformers' own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

TOKENIZER = Path(__file__).resolve().parent.parent / "src" / "gcpl" / "assets" / "clip-tokenizer"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
_CACHE: dict = {}


def tiny_config(text_layers: int = 2, vision_layers: int = 2):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=text_layers,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=48, intermediate_size=96,
                           num_hidden_layers=vision_layers, num_attention_heads=2),
        projection_dim=16)


def build_tiny_clip(folder: Path) -> Path:
    """A random-weight CLIPModel (ViT 32 px, patch 8, vision width 48; text width 32; 2 layers each)
    saved with save_pretrained, with OpenAI CLIP's tokenizer files."""
    import shutil

    from transformers import CLIPModel

    torch.manual_seed(0)
    CLIPModel(tiny_config()).save_pretrained(folder)
    for f in TOKENIZER.iterdir():  # the slow-tokenizer files load 5x faster than a saved tokenizer.json
        shutil.copy(f, folder / f.name)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32}, "do_center_crop": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "image_processor_type": "CLIPImageProcessor"}))
    return folder


def memory_clip(text_layers: int, vision_layers: int):
    """A gcpl.clip Clip around an in-memory random CLIPModel (no folder), for layer-count checks."""
    from transformers import CLIPModel, CLIPTokenizer

    from gcpl.clip.model import Clip, ImageSpec

    torch.manual_seed(1)
    net = CLIPModel(tiny_config(text_layers, vision_layers)).eval()
    net.requires_grad_(False)
    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    return Clip("memory", net, tok, torch.device("cpu"), torch.float32, ImageSpec(32, 32))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    if "dir" not in _CACHE:
        _CACHE["dir"] = build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
    return _CACHE["dir"]


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir):
    from gcpl.clip.model import load_clip

    if "clip" not in _CACHE:
        _CACHE["clip"] = load_clip(str(tiny_clip_dir), device="cpu")
    return _CACHE["clip"]


def make_images(root: Path, per_class: int = 6, seed: int = 0, size=(40, 30)) -> Path:
    """Noisy coloured rectangles, one subfolder per class (not square: resize + crop matter)."""
    rng = np.random.default_rng(seed)
    w, h = size
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
            x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            img[y : y + h // 2, x : x + w // 2] = colour
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


def make_split(root: Path, train: int = 4, val: int = 2, test: int = 3) -> Path:
    """A split JSON over make_images' files: per class `train`, `val`, `test` images."""
    make_images(root / "images", per_class=train + val + test)
    classes = sorted(COLOURS)
    parts = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classes):
        files = sorted((root / "images" / name).glob("*.png"))
        for part, sl in (("train", files[:train]), ("val", files[train : train + val]),
                         ("test", files[train + val :])):
            parts[part] += [{"path": str(f.relative_to(root)), "label": label, "class_name": name} for f in sl]
    path = root / "split.json"
    path.write_text(json.dumps({"classes": classes, **parts}))
    return path


@pytest.fixture
def split_file(tmp_path) -> Path:
    return make_split(tmp_path / "data")


# ----------------------------------------------------------------------------- the tower passes


def test_text_pass_equals_transformers(tiny_clip):
    texts = ["a photo of a red.", "a photo of a dark green thing, a type of colour."]
    ids = tiny_clip.tokenize(texts)
    with torch.no_grad():
        ref = tiny_clip.model.get_text_features(input_ids=ids).pooler_output
    assert torch.allclose(tiny_clip.encode_texts(texts), ref, atol=1e-5)


def test_image_pass_equals_transformers(tiny_clip):
    px = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = tiny_clip.model.get_image_features(pixel_values=px).pooler_output
    assert torch.allclose(tiny_clip.encode_images(px), ref, atol=1e-5)


def test_image_facts_from_the_folder(tiny_clip, tiny_clip_dir):
    assert tiny_clip.spec.size == 32 and tiny_clip.spec.resize == 32
    assert tiny_clip.spec.mean[0] == pytest.approx(0.48145466)
    assert tiny_clip.describe()["vision_width"] == 48 and tiny_clip.text_layers == 2


def test_missing_bundled_model_is_one_line(monkeypatch, tmp_path):
    from gcpl.clip import model
    from gcpl.errors import GcplError

    monkeypatch.setattr(model, "TINY_CLIP_DIR", tmp_path / "nowhere")
    with pytest.raises(GcplError) as e:
        model.load_clip("tiny", device="cpu")
    assert "tiny CLIP is missing" in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- pixels


def test_eval_view_is_resize_centre_crop_normalise():
    from gcpl.clip.model import ImageSpec
    from gcpl.clip.preprocess import eval_view
    from gcpl.data.images import preprocess

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (30, 47, 3)).astype(np.uint8))
    # the geometry of gcpl's SD transform (torchvision Resize + CenterCrop), another normalisation
    half = ImageSpec(size=24, resize=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert torch.allclose(eval_view(img, half), preprocess(img, 24), atol=1e-6)
    flat = Image.new("RGB", (50, 40), (255, 0, 128))
    spec = ImageSpec(size=32, resize=36)
    x = eval_view(flat, spec)
    assert x.shape == (3, 32, 32)
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), spec.mean, spec.std)]
    assert torch.allclose(x[:, 5, 7], torch.tensor(expected), atol=1e-5)


def test_random_resized_crop_is_seeded_and_in_range():
    from gcpl.clip.model import ImageSpec
    from gcpl.clip.preprocess import crop_box, train_view

    for seed in range(20):
        top, left, h, w = crop_box(60, 40, torch.Generator().manual_seed(seed), scale=(0.5, 1.0))
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60
        assert 0.5 * 2400 * 0.9 <= h * w <= 2400  # area fraction within the scale (up to rounding)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3)).astype(np.uint8))
    spec = ImageSpec(32, 32)
    a = train_view(img, spec, torch.Generator().manual_seed(3))
    b = train_view(img, spec, torch.Generator().manual_seed(3))
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    views = [train_view(img, spec, torch.Generator().manual_seed(s)) for s in range(6)]
    assert len({v.sum().item() for v in views}) > 1


def test_image_bank_views_match_single_views(tmp_path):
    from gcpl.clip.model import ImageSpec
    from gcpl.clip.preprocess import ImageBank, train_view

    root = make_images(tmp_path / "imgs", per_class=2)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="broken.png"):
        bank = ImageBank(paths + [str(tmp_path / "broken.png")], ImageSpec(32, 32))
    assert len(bank) == 6 and bank.kept == list(range(6)) and bank.skipped[0][0].endswith("broken.png")
    batch = bank.train_views([4, 1, 2, 0, 5], torch.Generator().manual_seed(0))  # on the thread pool
    g = torch.Generator().manual_seed(0)
    single = torch.stack([train_view(bank.images[i], bank.spec, g) for i in [4, 1, 2, 0, 5]])
    assert torch.equal(batch, single)
