"""Table 2 and Figure 3 across datasets: `gcpl report A B` over two real experiment folders
(bundled model, fractal data)."""

from __future__ import annotations

import csv
import statistics

import pytest

from gcpl.cli import main


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    import torch

    from gcpl.data.fractals import generate_benchmark

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("paper")
    folders = []
    for seed, name in ((0, "fracA"), (1, "fracB")):
        data = generate_benchmark(base / f"data{seed}", n_classes=2, per_class=5, seed=seed)
        out = base / "runs" / name
        assert main(["experiment", "--dataset", "fractals", "--root", str(data), "--out", str(out),
                     "--methods", "zeroshot,gcpl", "--shots", "1,2", "--seeds", "1,2", "--model", "tiny",
                     "--device", "cpu", "--gcpl-steps", "1", "--classify-n-samples", "1", "--classify-keep", "1",
                     "--limit", "2", "-q"]) == 0
        folders.append(out)
    torch.set_num_threads(threads)
    return base, folders


def _summary(folder):
    return {(r["method"], int(r["shots"])): r for r in csv.DictReader((folder / "summary.csv").open())}


def _table(base):
    return {r["method"]: r for r in csv.DictReader((base / "table2.csv").open())}


def test_table2_cells_are_the_per_dataset_summaries_and_the_average_their_mean(two_datasets, capsys):
    base, (a, b) = two_datasets
    assert main(["report", str(a), str(b)]) == 0
    assert "Table 2 (2 datasets, 2 shots)" in capsys.readouterr().out
    table, sa, sb = _table(base / "runs"), _summary(a), _summary(b)
    for method, shots in (("gcpl", 2), ("zeroshot", 0)):
        row = table[method]
        for name, s in (("fractals (fracA)", sa), ("fractals (fracB)", sb)):
            assert float(row[f"{name}_mean"]) == pytest.approx(float(s[(method, shots)]["top1_mean"]), abs=1e-5)
            assert row[f"{name}_complete"] == "True"
        means = [float(sa[(method, shots)]["top1_mean"]), float(sb[(method, shots)]["top1_mean"])]
        assert float(row["average"]) == pytest.approx(statistics.fmean(means), abs=1e-5)
    md = (base / "runs" / "table2.md").read_text()
    # both folders are of the fractals dataset: told apart by their folder names
    assert "| method | fractals (fracA) | fractals (fracB) | average |" in md and "| GCPL |" in md
    assert (base / "runs" / "figure3.png").stat().st_size > 10000


def test_missing_and_unfinished_cells_are_marked_and_left_out_of_the_average(two_datasets, tmp_path):
    import shutil

    base, (a, b) = two_datasets
    b2 = tmp_path / "fracB"
    shutil.copytree(b, b2)
    (b2 / "gcpl" / "shots2" / "seed2" / "eval" / "results.json").unlink()  # unfinished: 1 of 2 seeds
    for seed in (1, 2):
        (b2 / "gcpl" / "shots1" / f"seed{seed}" / "eval" / "results.json").unlink()  # missing
    out = tmp_path / "tables"
    assert main(["report", str(a), str(b2), "--out", str(out)]) == 0
    md = (out / "table2.md").read_text()
    gcpl = next(line for line in md.splitlines() if line.startswith("| GCPL |"))
    assert "(1/2 seeds)" in gcpl and gcpl.endswith("| – |")
    assert _table(out)["gcpl"]["average"] == ""
    assert main(["report", str(a), str(b2), "--out", str(out), "--shots", "1"]) == 0
    gcpl = next(line for line in (out / "table2.md").read_text().splitlines() if line.startswith("| GCPL |"))
    assert "missing" in gcpl and "# Table 2: top-1 accuracy (%) at 1 shots" in (out / "table2.md").read_text()
    zs = next(line for line in (out / "table2.md").read_text().splitlines() if line.startswith("| Zero-shot |"))
    assert not zs.endswith("| – |")  # zero-shot needs no shots: complete at any shots value
