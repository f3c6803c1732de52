"""IFS fractal generator: FractalDB rules, determinism, names, families, nuisances, dataset files."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gcpl.data import fractals as F
from gcpl.errors import GcplError
from gcpl.io import read_json


@pytest.fixture(scope="module")
def bench():
    return F.benchmark_classes(10, 0)


@pytest.fixture(scope="module")
def pre():
    return F.pretrain_classes(12, 0)


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- determinism -----------------------------------------------------------------------------


def test_classes_are_deterministic_and_seed_dependent(bench):
    again = F.benchmark_classes(10, 0)
    assert [c.name for c in again] == [c.name for c in bench]
    for a, b in zip(bench, again):
        assert np.array_equal(a.maps, b.maps) and np.array_equal(a.probs, b.probs)
    other = F.benchmark_classes(10, 1)
    assert not any(np.array_equal(a.maps, b.maps) for a in bench for b in other if a.maps.shape == b.maps.shape)
    p1, p2 = F.pretrain_classes(3, 5), F.pretrain_classes(3, 5)
    assert all(np.array_equal(a.maps, b.maps) and a.name == b.name for a, b in zip(p1, p2))


def test_render_is_deterministic_given_the_generator(bench):
    c = bench[0]
    a = _png(c.render(np.random.default_rng(7)))
    assert a == _png(c.render(np.random.default_rng(7)))
    assert a != _png(c.render(np.random.default_rng(8)))


def test_write_dataset_same_seed_same_bytes(tmp_path, bench):
    classes = bench[:2]
    d1 = _tree_digest(F.write_dataset(classes, tmp_path / "a", per_class=3, seed=4, size=16))
    d2 = _tree_digest(F.write_dataset(classes, tmp_path / "b", per_class=3, seed=4, size=16))
    d3 = _tree_digest(F.write_dataset(classes, tmp_path / "c", per_class=3, seed=5, size=16))
    assert d1 == d2
    pngs = [k for k in d1 if k.endswith(".png")]
    assert len(pngs) == 6 and all(d1[k] != d3[k] for k in pngs)


# --- FractalDB rules -------------------------------------------------------------------------


def _fill(c: F.FractalClass) -> float:
    img = np.asarray(c.render(np.random.default_rng(0), F.FILL_SIZE, nuisance=False))
    return float((img.max(-1) > 0).mean())


def test_every_category_meets_the_fill_rule(bench, pre):
    for c in bench + pre + F.benchmark_classes(5, 3):
        assert _fill(c) >= F.FILL_MIN == 0.2
        assert c.fill_rate() == pytest.approx(_fill(c))


def test_fill_check_rejects_thin_systems():
    # two maps squashing everything onto a line: fill far below 20 %
    maps = np.array([[[0.5, 0.0, 0.0], [0.0, 0.01, 0.0]], [[0.5, 0.0, 0.5], [0.0, 0.01, 0.0]]])
    c = F.FractalClass("line", maps, F.probs_from_maps(maps))
    assert c.fill_rate() < 0.2 and not F._accepted(c)


def test_maps_and_probabilities_follow_fractaldb(bench, pre):
    for c in bench + pre:
        k = len(c.maps)
        assert F.MIN_MAPS <= k <= F.MAX_MAPS and c.maps.shape == (k, 2, 3) and c.probs.shape == (k,)
        assert np.all(np.abs(c.maps) <= 1.0)
        det = np.abs(np.linalg.det(c.maps[:, :, :2]))
        np.testing.assert_allclose(c.probs, det / det.sum(), rtol=1e-9)
        assert c.probs.sum() == pytest.approx(1.0)
        assert all(np.linalg.norm(m[:, :2], 2) < 1 for m in c.maps)


def test_non_contractive_maps_are_refused():
    maps = np.array([[[1.5, 0.0, 0.0], [0.0, 0.5, 0.0]], [[0.5, 0.0, 0.5], [0.0, 0.5, 0.0]]])
    with pytest.raises(GcplError):
        F.FractalClass("big", maps, F.probs_from_maps(maps))


# --- names and pools -------------------------------------------------------------------------


def test_word_list_and_pools():
    assert len(F.WORDS) >= 400 and len(set(F.WORDS)) == len(F.WORDS)
    assert all(w.isascii() and w.isalpha() and w.islower() for w in F.WORDS)
    assert not set(F.BENCHMARK_WORDS) & set(F.PRETRAIN_WORDS)
    assert len(F.PRETRAIN_WORDS) >= 200 and len(F.BENCHMARK_WORDS) >= 200


def test_names_unique_and_pools_disjoint_across_seeds():
    bench = {s: F.benchmark_classes(6, s) for s in (0, 1, 2)}
    pre = {s: F.pretrain_classes(12, s) for s in (0, 1, 2)}
    for cs in list(bench.values()) + list(pre.values()):
        names = [c.name for c in cs]
        assert len(set(names)) == len(names)
        assert all(n.isalpha() and n.islower() and " " not in n for n in names)
    for sb, sp in itertools.product(bench, pre):
        assert not {c.name for c in bench[sb]} & {c.name for c in pre[sp]}
        for a, b in itertools.product(bench[sb], pre[sp]):
            assert F.param_distance(a, b) > 1e-3  # no shared parameters
    assert all(c.name in F.BENCHMARK_WORDS for cs in bench.values() for c in cs)
    assert all(c.name in F.PRETRAIN_WORDS for cs in pre.values() for c in cs)


# --- families --------------------------------------------------------------------------------


def test_siblings_are_closer_relatives_than_random_categories(bench, pre):
    fams: dict[str, list[F.FractalClass]] = {}
    for c in bench:
        fams.setdefault(c.family, []).append(c)
    assert len(fams) == 2 and all(len(v) == 5 for v in fams.values())
    within = [F.param_distance(a, b) for v in fams.values() for a, b in itertools.combinations(v, 2)]
    across = [F.param_distance(a, b) for a, b in itertools.product(*fams.values())]
    random_ = [F.param_distance(a, b) for a, b in itertools.combinations(pre, 2)]
    assert max(within) < min(across)
    assert max(within) < np.percentile(random_, 5)
    # siblings share all maps but n_perturbed ones with their parent, so with each other all but two
    for v in fams.values():
        for a, b in itertools.combinations(v, 2):
            assert a.maps.shape == b.maps.shape
            moved = np.abs(a.maps - b.maps).reshape(len(a.maps), -1).max(1) > 0
            assert 1 <= moved.sum() <= 2
            assert np.abs(a.maps - b.maps).max() <= 2 * F.FAMILY_DEFAULTS["perturb"] + 1e-12


def test_siblings_are_distinguishable(bench):
    for a, b in itertools.combinations(bench, 2):
        if a.family == b.family:
            assert F._iou(a.mask(32), b.mask(32)) <= F.FAMILY_DEFAULTS["max_iou"]


def test_knobs_change_families_and_bad_knobs_fail():
    cs = F.benchmark_classes(6, 0, family_size=2, perturb=0.1)
    assert len({c.family for c in cs}) == 3
    with pytest.raises(GcplError, match="unknown benchmark knob"):
        F.benchmark_classes(4, 0, colour=3)
    with pytest.raises(GcplError):
        F.benchmark_classes(4, 0, perturb=0.0)
    with pytest.raises(GcplError):
        F.benchmark_classes(10_000, 0)
    with pytest.raises(GcplError):
        F.pretrain_classes(0, 0)


# --- nuisances -------------------------------------------------------------------------------


def test_nuisance_varies_pose_colour_and_background(bench):
    c = bench[2]
    clean = [np.asarray(c.render(np.random.default_rng(i), 32, nuisance=False), dtype=float) for i in range(6)]
    noisy = [np.asarray(c.render(F.instance_rng(0, c.name, i), 32), dtype=float) for i in range(6)]
    d_clean = np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(clean, 2)])
    d_noisy = np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(noisy, 2)])
    assert d_noisy > 5 * d_clean
    corners = np.array([im[0, 0] for im in noisy])  # background colour
    assert corners.std(0).max() > 20
    # foreground position: the centroid of the pixels far from the corner colour moves around
    cents = []
    for im in noisy:
        fg = np.abs(im - np.median(im.reshape(-1, 3), 0)).sum(-1)
        w = fg / fg.sum()
        ys, xs = np.mgrid[:32, :32]
        cents.append(((w * xs).sum(), (w * ys).sum()))
    assert np.ptp(np.array(cents), 0).max() > 2
    # the clean render is white density on black
    assert clean[0].max() > 128 and clean[0][..., 0].tolist() == clean[0][..., 2].tolist()


@pytest.mark.parametrize("size", [8, 32, 48, 100])
def test_any_size(bench, size):
    img = bench[0].render(np.random.default_rng(0), size)
    assert img.mode == "RGB" and img.size == (size, size)


def test_bad_size_fails(bench):
    with pytest.raises(GcplError):
        bench[0].render(np.random.default_rng(0), 2)


# --- dataset files ---------------------------------------------------------------------------


def test_write_dataset_layout_and_json(tmp_path, bench):
    classes = bench[:3]
    out = F.write_dataset(classes, tmp_path / "ds", per_class=4, seed=2, size=20)
    assert out == tmp_path / "ds"
    assert sorted(p.name for p in out.iterdir()) == sorted([c.name for c in classes] + ["fractals.json"])
    for c in classes:
        files = sorted(p.name for p in (out / c.name).iterdir())
        assert files == [f"{i:04d}.png" for i in range(4)]
        im = Image.open(out / c.name / "0003.png")
        assert im.size == (20, 20) and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), np.asarray(c.render(F.instance_rng(2, c.name, 3), 20)))
    meta = read_json(out / "fractals.json")
    assert meta["format"] == F.FORMAT and meta["version"] == F.VERSION
    assert (meta["seed"], meta["size"], meta["per_class"]) == (2, 20, 4)
    assert meta["nuisance"]["rotation_deg"] == [-20.0, 20.0]
    assert [c["name"] for c in meta["classes"]] == [c.name for c in classes]
    for c, back in zip(classes, F.load_classes(out)):
        assert back.name == c.name and back.family == c.family
        assert np.array_equal(back.maps, c.maps) and np.array_equal(back.probs, c.probs)
    assert not list(tmp_path.glob(".ds.*"))  # no partial folder left behind


def test_write_dataset_refuses_a_non_empty_folder_and_bad_input(tmp_path, bench):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(GcplError, match="not an empty folder"):
        F.write_dataset(bench[:1], tmp_path / "full", per_class=1, seed=0)
    assert (tmp_path / "full" / "x.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    F.write_dataset(bench[:1], tmp_path / "empty", per_class=1, seed=0, size=8)
    with pytest.raises(GcplError):
        F.write_dataset(bench[:1] * 2, tmp_path / "dup", per_class=1, seed=0)
    with pytest.raises(GcplError):
        F.write_dataset(bench[:1], tmp_path / "neg", per_class=0, seed=0)
    with pytest.raises(GcplError):
        F.load_classes(tmp_path / "nothing")


def test_generate_benchmark(tmp_path):
    out = F.generate_benchmark(tmp_path / "b", n_classes=3, per_class=2, seed=1, size=16)
    meta = read_json(out / "fractals.json")
    names = [c.name for c in F.benchmark_classes(3, 1)]
    assert [c["name"] for c in meta["classes"]] == names
    assert meta["meta"]["pool"] == "benchmark" and meta["meta"]["knobs"] == F.FAMILY_DEFAULTS
    assert all(len(list((out / n).glob("*.png"))) == 2 for n in names)
