"""gcpl.data.images and gcpl.data.splits: offline, on small images written with PIL into tmp_path."""

from __future__ import annotations

import json
import os
import random
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from gcpl.data.folders import IMAGE_EXTENSIONS, is_image_file, read_class_folder
from gcpl.data.images import (
    LoadedImages,
    SkippedImageWarning,
    UnreadableImage,
    load_batch,
    load_rgb,
    preprocess,
    to_rgb,
)
from gcpl.data.splits import (
    Sample,
    Split,
    class_seed,
    few_shot,
    read_samples,
)
from gcpl.errors import GcplError

# ----------------------------------------------------------------------------- helpers


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _px(img: Image.Image, xy=(0, 0)) -> tuple:
    assert img.mode == "RGB"
    return tuple(int(v) for v in img.getpixel(xy))


def _noise(w=64, h=64, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def good_png(tmp_path):
    return _save(Image.new("RGB", (8, 6), (10, 20, 30)), tmp_path / "good.png")


@pytest.fixture
def truncated_png(tmp_path):
    return _truncate(_save(_noise(), tmp_path / "cut.png"))


@pytest.fixture
def truncated_jpg(tmp_path):
    return _truncate(_save(_noise(), tmp_path / "cut.jpg", quality=95))


@pytest.fixture
def text_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n")
    return p


# ----------------------------------------------------------------------------- mode conversion


def _palette_img(transparency=None) -> Image.Image:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 10, 20, 30] + [0, 0, 0] * 254)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    if transparency is not None:
        im.info["transparency"] = transparency
    return im


@pytest.mark.parametrize(
    "make, fmt, expected",
    [
        (lambda: Image.new("1", (4, 4), 1), "png", [(255, 255, 255)]),
        (lambda: Image.new("1", (4, 4), 0), "png", [(0, 0, 0)]),
        (lambda: Image.new("L", (4, 4), 200), "png", [(200, 200, 200)]),
        (lambda: Image.new("L", (4, 4), 200), "pgm", [(200, 200, 200)]),
        (lambda: Image.new("LA", (4, 4), (100, 255)), "png", [(100, 100, 100)]),
        (lambda: Image.new("LA", (4, 4), (100, 0)), "png", [(255, 255, 255)]),
        # 100*128/255 + 255*127/255 = 177.2
        (lambda: Image.new("LA", (4, 4), (100, 128)), "png", [(177, 177, 177)]),
        (lambda: _palette_img(), "png", [(255, 0, 0), (10, 20, 30)]),
        (lambda: _palette_img(), "gif", [(255, 0, 0), (10, 20, 30)]),
        (lambda: _palette_img(), "bmp", [(255, 0, 0), (10, 20, 30)]),
        (lambda: _palette_img(transparency=0), "png", [(255, 255, 255), (10, 20, 30)]),
        (lambda: _palette_img(transparency=0), "gif", [(255, 255, 255), (10, 20, 30)]),
        (lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "png", [(255, 255, 255)]),
        (lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 255)), "png", [(255, 0, 0)]),
        (lambda: Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "webp", [(255, 255, 255)]),
        (lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "tif", [(255, 255, 255)]),
        (lambda: Image.new("CMYK", (4, 4), (255, 0, 0, 0)), "tif", [(0, 255, 255)]),
        (lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 255)), "tif", [(0, 0, 0)]),
        (lambda: Image.new("I;16", (4, 4), 65535), "png", [(255, 255, 255)]),
        (lambda: Image.new("I;16", (4, 4), 257 * 100), "png", [(100, 100, 100)]),
        (lambda: Image.new("I;16", (4, 4), 257 * 100), "tif", [(100, 100, 100)]),
        (lambda: Image.new("I;16B", (4, 4), 65535), "tif", [(255, 255, 255)]),
        (lambda: Image.new("F", (4, 4), 0.5), "tif", [(128, 128, 128)]),
        (lambda: Image.new("F", (4, 4), 1.0), "tif", [(255, 255, 255)]),
        (lambda: Image.new("RGB", (4, 4), (1, 2, 3)), "ppm", [(1, 2, 3)]),
        (lambda: Image.new("RGB", (4, 4), (1, 2, 3)), "tiff", [(1, 2, 3)]),
    ],
)
def test_load_rgb_mode_files(tmp_path, make, fmt, expected):
    src = make()
    path = _save(src, tmp_path / f"img.{fmt}")
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == src.size
    for x, rgb in enumerate(expected):
        assert _px(img, (x, 0)) == rgb


def test_ycbcr_file(tmp_path):
    path = _save(Image.new("YCbCr", (4, 4), (128, 128, 128)), tmp_path / "y.tif")
    assert np.allclose(_px(load_rgb(path)), (128, 128, 128), atol=1)
    path = _save(Image.new("YCbCr", (4, 4), (128, 128, 128)), tmp_path / "y.jpg", quality=100)
    assert np.allclose(_px(load_rgb(path)), (128, 128, 128), atol=2)


def test_to_rgb_in_memory_modes():
    pa = Image.new("PA", (2, 1))
    pa.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    pa.putpixel((0, 0), (0, 0))
    pa.putpixel((1, 0), (0, 255))
    assert [_px(to_rgb(pa), (x, 0)) for x in range(2)] == [(255, 255, 255), (255, 0, 0)]

    # 16-bit range in a 32-bit "I" image (how Pillow < 11 opens 16-bit PNGs): / 257
    i16 = Image.fromarray(np.array([[0, 257, 65535]], dtype=np.int32))
    assert i16.mode == "I"
    assert [_px(to_rgb(i16), (x, 0))[0] for x in range(3)] == [0, 1, 255]
    # "I" values already within 0..255 are used as they are
    i8 = Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32))
    assert [_px(to_rgb(i8), (x, 0))[0] for x in range(3)] == [0, 7, 255]
    # out-of-range "I" and "F": min..max stretched to 0..255
    wide = Image.fromarray(np.array([[-100, 0, 155]], dtype=np.int32))
    assert [_px(to_rgb(wide), (x, 0))[0] for x in range(3)] == [0, 100, 255]
    f = Image.fromarray(np.array([[-1.0, 1.55, np.nan]], dtype=np.float32))  # NaN counts as 0
    assert [_px(to_rgb(f), (x, 0))[0] for x in range(3)] == [0, 255, 100]
    # RGB with a transparent colour (PNG tRNS): that colour becomes white
    rgb = Image.new("RGB", (1, 1), (9, 9, 9))
    rgb.info["transparency"] = (9, 9, 9)
    assert _px(to_rgb(rgb)) == (255, 255, 255)


def test_16bit_values_are_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257 * 50, 257 * 200, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(a), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    img = load_rgb(path)
    assert [_px(img, (x, 0))[0] for x in range(4)] == [0, 50, 200, 255]


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(im, tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(path).size == (10, 20)


# ----------------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize("fixture", ["truncated_png", "truncated_jpg"])
def test_truncated_raises(request, fixture):
    path = request.getfixturevalue(fixture)
    with pytest.raises(UnreadableImage) as ei:
        load_rgb(path)
    msg = str(ei.value)
    assert str(path) in msg and "\n" not in msg
    assert ei.value.path == str(path)
    assert isinstance(ei.value, GcplError)


def test_text_file_named_jpg(text_jpg):
    with pytest.raises(UnreadableImage, match=r"not an image file"):
        load_rgb(text_jpg)


def test_missing_and_folder(tmp_path):
    with pytest.raises(UnreadableImage, match=re.escape(f"{tmp_path / 'nope.png'}: file does not exist")):
        load_rgb(tmp_path / "nope.png")
    with pytest.raises(UnreadableImage, match="is a folder"):
        load_rgb(tmp_path)


def test_load_batch_skips_and_reports(good_png, truncated_png, truncated_jpg, text_jpg):
    paths = [good_png, truncated_png, text_jpg, good_png, truncated_jpg]
    with pytest.warns(SkippedImageWarning) as rec:
        out = load_batch(paths, size=4)
    assert isinstance(out, LoadedImages)
    assert out.kept == [0, 3] and len(out) == 2
    assert out.pixels.shape == (2, 3, 4, 4) and out.pixels.dtype == torch.float32
    assert [p for p, _ in out.skipped] == [str(truncated_png), str(text_jpg), str(truncated_jpg)]
    assert "truncated" in out.skipped[0][1] and "not an image" in out.skipped[1][1]
    assert len(rec) == 3 and str(truncated_png) in str(rec[0].message)
    # (10, 20, 30) -> x / 127.5 - 1
    expected = torch.tensor([10, 20, 30], dtype=torch.float32) / 255 * 2 - 1
    assert torch.allclose(out.pixels[0, :, 0, 0], expected, atol=1e-6)


def test_load_batch_strict_and_nothing_readable(good_png, truncated_png, text_jpg):
    with pytest.raises(UnreadableImage, match=re.escape(str(truncated_png))):
        load_batch([good_png, truncated_png], size=4, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        with pytest.raises(GcplError, match="none of the 2 image file"):
            load_batch([truncated_png, text_jpg], size=4)
    with pytest.raises(GcplError, match="no image files"):
        load_batch([], size=4)
    with pytest.warns(SkippedImageWarning):
        out = load_batch([truncated_png], size=4, allow_empty=True)
    assert out.pixels.shape == (0, 3, 4, 4) and out.kept == []
    assert out.skipped[0][0] == str(truncated_png)
    assert load_batch([], size=4, allow_empty=True).pixels.shape == (0, 3, 4, 4)
    with pytest.raises(GcplError, match="positive integer"):
        load_batch([good_png], size=0)


# ----------------------------------------------------------------------------- preprocess


def _thirds(w, h, horizontal=True) -> Image.Image:
    """Red / green / blue thirds, left to right (or top to bottom)."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    n = w if horizontal else h
    for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        sl = slice(i * n // 3, (i + 1) * n // 3)
        if horizontal:
            a[:, sl] = c
        else:
            a[sl, :] = c
    return Image.fromarray(a, "RGB")


GREEN = torch.tensor([-1.0, 1.0, -1.0])


def test_preprocess_shape_range_and_exact_values():
    t = preprocess(_noise(37, 23), 16)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32 and t.is_contiguous()
    assert t.min() >= -1 and t.max() <= 1
    t = preprocess(Image.fromarray(np.array([[[0, 255, 51]]] * 4, dtype=np.uint8).repeat(4, 1)), 4)
    assert torch.equal(t[:, 0, 0], torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))
    assert t[0].eq(-1).all() and t[1].eq(1).all()


def test_preprocess_center_crop_without_resize():
    # shorter side already 10: no resize, the crop is exactly the green middle third
    t = preprocess(_thirds(30, 10), 10)
    assert torch.equal(t, GREEN.view(3, 1, 1).expand(3, 10, 10))
    t = preprocess(_thirds(10, 30, horizontal=False), 10)
    assert torch.equal(t, GREEN.view(3, 1, 1).expand(3, 10, 10))


def test_preprocess_crop_offset_rounding():
    # 11 x 10: offset round(0.5) = 0 (as torchvision), so column 0 is kept and column 10 dropped
    a = np.zeros((10, 11, 3), dtype=np.uint8)
    a[:, 0] = (0, 0, 255)
    a[:, 10] = (255, 0, 0)
    t = preprocess(Image.fromarray(a), 10)
    assert torch.equal(t[:, :, 0], torch.tensor([-1.0, -1.0, 1.0]).view(3, 1).expand(3, 10))
    assert t[0].max() == -1  # no red anywhere
    # 13 x 10: offset round(1.5) = 2 (not floor = 1)
    a = np.zeros((10, 13, 3), dtype=np.uint8)
    a[:, 1] = (255, 0, 0)
    a[:, 2] = (0, 0, 255)
    t = preprocess(Image.fromarray(a), 10)
    assert t[2, :, 0].eq(1).all() and t[0].max() == -1


def test_preprocess_resize_then_crop_half_black_half_white():
    # 80 x 40, left half black, right half white -> resize to 32 x 16, crop columns 8..23:
    # the left half of the crop is black, the right half white (away from the edge)
    a = np.zeros((40, 80, 3), dtype=np.uint8)
    a[:, 40:] = 255
    t = preprocess(Image.fromarray(a), 16)
    assert t.shape == (3, 16, 16)
    assert torch.allclose(t[:, :, :6], torch.tensor(-1.0), atol=1e-6)
    assert torch.allclose(t[:, :, 10:], torch.tensor(1.0), atol=1e-6)
    # and a wide image whose middle third is green keeps green in the middle after resizing
    t = preprocess(_thirds(90, 30), 10)
    assert torch.allclose(t[:, :, 2:8], GREEN.view(3, 1, 1).expand(3, 10, 6), atol=0.05)


def test_preprocess_non_rgb_input_and_bad_size():
    t = preprocess(Image.new("RGBA", (5, 5), (0, 0, 0, 0)), 5)
    assert t.eq(1).all()  # transparent -> white
    with pytest.raises(GcplError):
        preprocess(Image.new("RGB", (5, 5)), -3)


def test_image_extensions():
    for ext in ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm"]:
        assert f".{ext}" in IMAGE_EXTENSIONS
        assert is_image_file(f"a/b.{ext.upper()}") and is_image_file(f"x.{ext}")
    assert not is_image_file("a.txt") and not is_image_file("jpg")


# ----------------------------------------------------------------------------- class folders


def _tiny(path):
    return _save(Image.new("RGB", (2, 2), (1, 2, 3)), path)


@pytest.fixture
def class_root(tmp_path):
    root = tmp_path / "data"
    for rel in ["b_cls/1.png", "a_cls/y.JPG", "a_cls/x.png", "a_cls/sub/z.png", "a_cls/.hid.png",
                ".hidden_cls/q.png", "a_cls/.cache/w.png", "c_cls/k.webp"]:
        _tiny(root / rel)
    (root / "a_cls" / "notes.txt").write_text("x")
    (root / "README.md").write_text("x")
    return root


def test_read_class_folder(class_root):
    classes, samples = read_class_folder(class_root)
    assert classes == ["a cls", "b cls", "c cls"]  # the one naming rule: underscores as spaces
    base = os.path.abspath(class_root)
    assert [(s.path, s.label, s.class_name) for s in samples] == [
        (os.path.join(base, "a_cls", "sub", "z.png"), 0, "a cls"),
        (os.path.join(base, "a_cls", "x.png"), 0, "a cls"),
        (os.path.join(base, "a_cls", "y.JPG"), 0, "a cls"),
        (os.path.join(base, "b_cls", "1.png"), 1, "b cls"),
        (os.path.join(base, "c_cls", "k.webp"), 2, "c cls"),
    ]
    assert all(os.path.isabs(s.path) for s in samples)


def test_train_and_prepare_folder_give_the_same_class_names(tmp_path):
    """`gcpl train DIR` reads DIR with the same rule as `gcpl prepare folder --root DIR`."""
    from gcpl.data.loaders import load_folder

    for folder in ("001.sea_shell", "002.Tree__Frog", "10-big_cat", "42", "plain"):
        for i in range(4):
            _tiny(tmp_path / "d" / folder / f"{i}.png")
    classes, _ = read_class_folder(tmp_path / "d")
    assert classes == ["sea shell", "Tree Frog", "big cat", "42", "plain"]
    assert load_folder(tmp_path / "d", seed=0).classes == classes


def test_read_class_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(GcplError, match=re.escape(f"data folder {missing} does not exist")):
        read_class_folder(missing)
    f = _tiny(tmp_path / "one.png")
    with pytest.raises(GcplError, match=re.escape(f"data folder {f} is not a folder")):
        read_class_folder(f)
    flat = tmp_path / "flat"
    _tiny(flat / "a.png")
    _tiny(flat / ".hidden" / "b.png")
    with pytest.raises(
        GcplError,
        match=re.escape(f"{flat} has no class subfolders; expected {flat}/<class name>/<image files>"),
    ):
        read_class_folder(flat)
    root = tmp_path / "root"
    _tiny(root / "good" / "a.png")
    (root / "empty_cls").mkdir()
    (root / "empty_cls" / "a.txt").write_text("x")
    with pytest.raises(GcplError, match=r"class folder .*empty_cls has no image files"):
        read_class_folder(root)


def test_read_class_folder_warns_on_loose_images(tmp_path):
    _tiny(tmp_path / "d" / "cls" / "a.png")
    _tiny(tmp_path / "d" / "loose.png")
    with pytest.warns(UserWarning, match="directly in"):
        classes, samples = read_class_folder(tmp_path / "d")
    assert classes == ["cls"] and len(samples) == 1


# ----------------------------------------------------------------------------- read_samples


def test_read_samples_folder_and_json(class_root, tmp_path):
    classes, samples = read_samples(class_root, "test")
    assert classes == ["a cls", "b cls", "c cls"] and len(samples) == 5
    split = Split(classes=classes, train=samples[:2], test=samples[2:])
    sp = class_root / "split.json"
    split.to_json(sp, relative_to=class_root)
    assert read_samples(sp, "train") == (classes, samples[:2])
    assert read_samples(sp, "test") == (classes, samples[2:])
    with pytest.raises(GcplError, match=re.escape(f"split file {sp} has no 'val' samples")):
        read_samples(sp, "val")
    with pytest.raises(GcplError, match="unknown split part"):
        read_samples(sp, "dev")
    txt = tmp_path / "list.txt"
    txt.write_text("x")
    with pytest.raises(GcplError, match=r"neither a data folder .* nor a split \.json file"):
        read_samples(txt, "train")
    with pytest.raises(GcplError, match="split file .* does not exist"):
        read_samples(tmp_path / "nope.json", "train")
    with pytest.raises(GcplError, match="data folder .* does not exist"):
        read_samples(tmp_path / "nope", "train")


# ----------------------------------------------------------------------------- few-shot


def _cls(name, label, n, prefix="/d"):
    return [Sample(f"{prefix}/{name}/{i:03d}.png", label, name) for i in range(n)]


def test_class_seed_stable():
    s = class_seed(0, "Acura RL 2012")
    assert 0 <= s < 2**63
    assert s == class_seed(0, "Acura RL 2012")
    assert len({s, class_seed(1, "Acura RL 2012"), class_seed(0, "Acura RL 2013")}) == 3
    # pinned: a change here silently changes every few-shot draw and per-class RNG
    assert class_seed(0, "a") == 8447738050511873678
    with pytest.raises(GcplError):
        class_seed("0", "a")


def test_few_shot_deterministic_and_seed_dependent():
    samples = _cls("A", 0, 20) + _cls("B", 1, 20)
    picks = few_shot(samples, 5, seed=0)
    assert picks == few_shot(samples, 5, seed=0)
    assert [s.class_name for s in picks] == ["A"] * 5 + ["B"] * 5
    assert len(set(picks)) == 10
    draws = {tuple(few_shot(samples, 5, seed=k)) for k in range(5)}
    assert len(draws) == 5
    # pinned regression value for seed 0
    assert [s.path[-7:-4] for s in picks[:5]] == PINNED_A_SEED0


PINNED_A_SEED0 = ["005", "011", "000", "003", "016"]


def test_few_shot_independent_of_other_classes_and_order():
    a = _cls("A", 0, 12)
    alone = few_shot(a, 4, seed=7)
    # A with another class present, A relabelled to 1, input shuffled
    a1 = [Sample(s.path, 1, "A") for s in a]
    mixed = _cls("B", 0, 9) + a1
    random.Random(3).shuffle(mixed)
    picks = few_shot(mixed, 4, seed=7)
    assert [s.class_name for s in picks] == ["B"] * 4 + ["A"] * 4  # by label
    assert [s.path for s in picks[4:]] == [s.path for s in alone]
    # and B's picks are unaffected by A
    assert picks[:4] == few_shot(_cls("B", 0, 9), 4, seed=7)


def test_few_shot_too_few_and_allow_fewer():
    samples = _cls("A", 0, 10) + _cls("X", 1, 3)
    with pytest.raises(
        GcplError,
        match=re.escape("class 'X' has 3 images but --shots is 4; lower --shots or pass --allow-fewer"),
    ):
        few_shot(samples, 4, seed=0)
    with pytest.warns(UserWarning, match="class 'X' has 3 images"):
        picks = few_shot(samples, 4, seed=0, allow_fewer=True)
    assert len(picks) == 7
    assert {s.path for s in picks if s.class_name == "X"} == {s.path for s in samples[10:]}
    for bad in (0, -1):
        with pytest.raises(GcplError, match="--shots must be a positive integer"):
            few_shot(samples, bad, seed=0)
    with pytest.raises(GcplError, match="no samples"):
        few_shot([], 1, seed=0)


# ----------------------------------------------------------------------------- split JSON


def test_split_json_round_trip_relative(tmp_path):
    data = tmp_path / "data"
    inside = [Sample(str(data / "images" / f"{i}.jpg"), i % 2, ["x", "y"][i % 2]) for i in range(4)]
    outside = Sample(str(tmp_path / "elsewhere" / "o.jpg"), 0, "x")
    split = Split(classes=["x", "y"], train=inside[:2], test=inside[2:] + [outside])
    path = data / "split.json"
    split.to_json(path, relative_to=data)
    raw = json.loads(path.read_text())
    assert raw["train"][0] == {"path": "images/0.jpg", "label": 0, "class_name": "x"}
    assert raw["test"][-1]["path"] == str(tmp_path / "elsewhere" / "o.jpg")
    assert "val" not in raw
    back = Split.from_json(path)
    assert back == split
    # relative paths resolve against the JSON file's folder, wherever it is read from
    moved = tmp_path / "moved"
    data.rename(moved)
    assert Split.from_json(moved / "split.json").train[0].path == str(moved / "images" / "0.jpg")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"is not valid JSON"),
        ("[1, 2]", r"must be an object with 'classes', 'train' and 'test' lists"),
        ('{"train": []}', r"must be an object with 'classes'"),
        ('{"classes": "ab"}', r"'classes' must be a list of class names"),
        ('{"classes": ["a", "a"]}', r"class name 'a' appears more than once"),
        ('{"classes": ["a"], "train": {"path": "x"}}', r"'train' must be a list of samples"),
        ('{"classes": ["a"], "train": [{"path": "x", "label": 0}]}',
         r"train\[0\] needs 'path', 'label' and 'class_name'"),
        ('{"classes": ["a"], "test": [{"path": 5, "label": 0, "class_name": "a"}]}',
         r"test\[0\] needs 'path'"),
        ('{"classes": ["a"], "test": [{"path": "x", "label": 1, "class_name": "a"}]}',
         r"test\[0\] has label 1 / class 'a', which does not match the 'classes' list"),
        ('{"classes": ["a", "b"], "val": [{"path": "x", "label": 0, "class_name": "b"}]}',
         r"val\[0\] has label 0 / class 'b'"),
    ],
)
def test_split_json_malformed(tmp_path, content, message):
    path = tmp_path / "split.json"
    path.write_text(content)
    with pytest.raises(GcplError, match=message) as ei:
        Split.from_json(path)
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)


def test_split_json_missing_file(tmp_path):
    with pytest.raises(GcplError, match="split file .*nope.json does not exist"):
        Split.from_json(tmp_path / "nope.json")
