"""A development split for a `gcpl fractals` benchmark: more instances of the same classes, never in
its train or test lists, to choose the classifier's knobs on images other than the reported ones.

Instance i of a fractal class is rendered from its own seeded stream, so rendering the benchmark
with more images per class reproduces the first ones exactly (checked) and adds new instances.

    python bench/fractal_dev.py runs/bench100 --classes 100 --seed 0 --first 20 --last 28
writes runs/bench100/data_dev/ (instances 0..last-1) and runs/bench100/dev.json (its `test` list:
instances first..last-1 of every class of runs/bench100/split.json). `--name test2` writes
data_test2/ and test2.json instead: a further test set, for a confirmation on images that no
choice has seen.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="benchmark folder holding data/ (gcpl fractals) and split.json")
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", type=int, required=True, help="first new instance (= images per class in data/)")
    p.add_argument("--last", type=int, required=True, help="one past the last instance")
    p.add_argument("--name", default="dev", help="writes data_NAME/ and NAME.json (e.g. test2: a second test set)")
    a = p.parse_args(argv)

    from gcpl.data.fractals import generate_benchmark
    from gcpl.data.splits import Sample, Split

    out = Path(a.folder)
    split = Split.from_json(out / "split.json")
    data = out / f"data_{a.name}"
    if not data.exists():
        generate_benchmark(data, n_classes=a.classes, per_class=a.last, seed=a.seed)
    dev = Split(classes=split.classes)
    for label, name in enumerate(split.classes):
        if (data / name / "0000.png").read_bytes() != (out / "data" / name / "0000.png").read_bytes():
            raise SystemExit(f"{data} does not render the benchmark's own instances (other seed or classes?)")
        dev.test += [Sample(str(data / name / f"{i:04d}.png"), label, name) for i in range(a.first, a.last)]
    dev.to_json(out / f"{a.name}.json", relative_to=out)
    print(f"{len(dev.test)} images (instances {a.first} to {a.last - 1} of each class) -> {out / f'{a.name}.json'}")


if __name__ == "__main__":
    main()
