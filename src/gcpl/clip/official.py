"""The official settings of every CLIP competitor, per dataset and shot count, each with the file
and line of the official repository it comes from (`TABLE`), and `resolve(job)`, which fills in
every setting a ClipJob leaves at None ("the official value") for its dataset and shots.

    job, sources = resolve(ClipJob(method="tip-adapter", data=..., out=..., dataset="cars"))
    job.clip.tip.alpha, sources["tip_alpha"]
    # 3.0, 'official: gaopengcuhk/Tip-Adapter/configs/stanford_cars.yaml:21'

A source is "official: <repo>/<file>:<line>", "gcpl: <why>" for a dataset the official code never
configured (the paper's own datasets: cornseeds, crc5k, isic2018, lc25000, fractals, folder), or
"given" for a value set on the command line (an explicit value always wins). Line numbers refer
to the commits in `COMMITS`. Datasets the code never configured get each method's generic values
(ImageNet's configs for Tip-Adapter; the few-shot config's default for PromptSRC), except:
- the hand-crafted prompt: the dataset's own prompt (ClipJob.template, in gcpl experiment the
  paper's Table 1 prompt), since only CoOp's datasets have an official one;
- PromptSRC's Gaussian prompt aggregation: mean 45, std 5 for the paper's fine-grained and
  specialised datasets, the values its config gives StanfordCars, Flowers102, FGVCAircraft, DTD
  and EuroSAT (the generic 30 / 30 is for ImageNet-like data: ImageNet, Caltech101, Pets, Food101,
  UCF101, SUN397); a plain `folder` keeps 30 / 30.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from ..settings import flat, replace

COOP = "KaiyangZhou/CoOp"
TIP = "gaopengcuhk/Tip-Adapter"
KGCOOP = "htyao89/KgCoOp"
MAPLE = "muzairkhattak/multimodal-prompt-learning"
PROMPTSRC = "muzairkhattak/PromptSRC"
#: the commits whose files the line numbers cite
COMMITS = {COOP: "ff61507c790454bce7c5052c3ac39e60772f1f89", TIP: "d0e2d6f8c5feb8b6ce937b757810761f7155d4d5",
           KGCOOP: "c43ccc32c8739f64b165cfa205fcc6c0f5bb5b17", MAPLE: "69bce21ae8eda80ad6187534b2dce09cf6c59e17",
           PROMPTSRC: "bb95c77b634d63488f2cad81ff4a72d53bdd06d5"}

#: the datasets of the table's columns (gcpl's registry names); None: no dataset given
DATASETS = ("cars", "flowers102")
#: the paper's datasets that no official code configured, but that are fine-grained or specialised
SPECIALISED = ("cornseeds", "crc5k", "isic2018", "lc25000", "fractals")

#: CLIP's 60 ImageNet prompts (openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb), the
#: frozen text features of PromptSRC: muzairkhattak/PromptSRC/trainers/imagenet_templates.py:3-64
IMAGENET_TEMPLATES = (
    'a photo of a {}.', 'a bad photo of a {}.', 'a photo of many {}.',
    'a sculpture of a {}.', 'a photo of the hard to see {}.', 'a low resolution photo of the {}.',
    'a rendering of a {}.', 'graffiti of a {}.', 'a bad photo of the {}.',
    'a cropped photo of the {}.', 'a tattoo of a {}.', 'the embroidered {}.',
    'a photo of a hard to see {}.', 'a bright photo of a {}.', 'a photo of a clean {}.',
    'a photo of a dirty {}.', 'a dark photo of the {}.', 'a drawing of a {}.',
    'a photo of my {}.', 'the plastic {}.', 'a photo of the cool {}.',
    'a close-up photo of a {}.', 'a black and white photo of the {}.', 'a painting of the {}.',
    'a painting of a {}.', 'a pixelated photo of the {}.', 'a sculpture of the {}.',
    'a bright photo of the {}.', 'a cropped photo of a {}.', 'a plastic {}.',
    'a photo of the dirty {}.', 'a jpeg corrupted photo of a {}.', 'a blurry photo of the {}.',
    'a photo of the {}.', 'a good photo of the {}.', 'a rendering of the {}.',
    'a {} in a video game.', 'a photo of one {}.', 'a doodle of a {}.',
    'a close-up photo of the {}.', 'the origami {}.', 'the {} in a video game.',
    'a sketch of a {}.', 'a doodle of the {}.', 'a origami {}.',
    'a low resolution photo of a {}.', 'the toy {}.', 'a rendition of the {}.',
    'a photo of the clean {}.', 'a photo of a large {}.', 'a rendition of a {}.',
    'a photo of a nice {}.', 'a photo of a weird {}.', 'a blurry photo of a {}.',
    'a cartoon {}.', 'art of a {}.', 'a sketch of the {}.',
    'a embroidered {}.', 'a pixelated photo of a {}.', 'itap of the {}.',
)


@dataclass(frozen=True)
class Choice:
    value: object
    source: str  # "official: <repo>/<file>:<line>" or "gcpl: <why>"


class _DatasetPrompt:
    def __repr__(self) -> str:
        return "the dataset's prompt (--template)"


#: the value of a row that stands for ClipJob.template (the dataset's own prompt)
DATASET_PROMPT = _DatasetPrompt()


@dataclass(frozen=True)
class Row:
    """One setting (a ClipJob dest, e.g. tip_alpha) of the methods that use it: its generic value
    (no dataset, or a dataset without an entry), its per-dataset values, or one per shot count."""

    dest: str
    methods: tuple[str, ...]
    generic: Choice
    datasets: dict[str, Choice] = field(default_factory=dict)
    unconfigured: str = ""  # datasets without an entry: "gcpl: <this> (<generic source>)"; "": official everywhere
    shots: Callable[[int], Choice] | None = None

    def choice(self, dataset: str | None, shots: int) -> Choice:
        if self.shots is not None:
            return self.shots(shots)
        if dataset in self.datasets:
            return self.datasets[dataset]
        if dataset is None or not self.unconfigured:
            return self.generic
        return Choice(self.generic.value, f"gcpl: {self.unconfigured} ({self.generic.source.removeprefix('official: ')})")

    @property
    def option(self) -> str:
        return "--" + self.dest.rstrip("_").replace("_", "-")


def _src(path: str, line) -> str:
    return f"official: {path}:{line}"


def _every(methods: tuple[str, ...], prefix: str, path: str, **values) -> list[Row]:
    """Rows of one config file, the same for every dataset: name=(value, line)."""
    return [Row(f"{prefix}_{name}", methods, Choice(v, _src(path, line))) for name, (v, line) in values.items()]


# --- the hand-crafted prompt and the class names ------------------------------------------------------

PROMPTED = ("clip-zs", "tip-adapter", "tip-adapter-f", "kgcoop", "promptsrc")
NAMED = ("clip-zs", "tip-adapter", "tip-adapter-f", "coop", "kgcoop", "cocoop", "maple", "promptsrc")
_ZS, _KG = f"{COOP}/trainers/zsclip.py", f"{KGCOOP}/KgCoOp/trainers/kgcoop.py"
TEXT = [
    Row("clip_template", PROMPTED, Choice(DATASET_PROMPT, "gcpl: the dataset's own prompt (--template); the official "
                                          "code has none for it"), {
        "cars": Choice("a photo of a {}.", f"{_src(_ZS, 19)}, {_KG}:44, {TIP}/datasets/stanford_cars.py:8"),
        "flowers102": Choice("a photo of a {}, a type of flower.",
                             f"{_src(_ZS, 15)}, {_KG}:39, {TIP}/datasets/oxford_flowers.py:10")}),
    Row("clip_class_names", NAMED, Choice("spaces", f"{_src(f'{COOP}/trainers/coop.py', 98)}, {_ZS}:43, "
                                          f"{TIP}/utils.py:24, {_KG}:127, {PROMPTSRC}/trainers/promptsrc.py:108"),
        {"cars": Choice("year-first", _src(f"{COOP}/datasets/stanford_cars.py", "68-71"))}),
]

# --- Tip-Adapter: one config file per dataset, every file with the same line layout ------------------


def _tip_config(name: str, alpha: float, scale: tuple[float, float]) -> dict[str, Choice]:
    path = f"{TIP}/configs/{name}"
    return {"tip_alpha": Choice(alpha, _src(path, 21)), "tip_beta": Choice(1.0, _src(path, 20)),
            "tip_search_scale": Choice(scale, _src(path, 17)), "tip_search_steps": Choice((200, 20), _src(path, 18)),
            "tip_augment_epochs": Choice(10, _src(path, 30)), "tipf_lr": Choice(0.001, _src(path, 29)),
            "tipf_epochs": Choice(20, _src(path, 31))}


_TIP = {None: _tip_config("imagenet.yaml", 1.17, (7.0, 3.0)), "cars": _tip_config("stanford_cars.yaml", 3.0, (20.0, 10.0)),
        "flowers102": _tip_config("oxford_flowers.yaml", 10.0, (50.0, 50.0))}
TIP_ROWS = [Row(dest, ("tip-adapter-f",) if dest.startswith("tipf_") else ("tip-adapter", "tip-adapter-f"), generic,
                {d: c[dest] for d, c in _TIP.items() if d}, "Tip-Adapter has no config for this dataset; ImageNet's")
            for dest, generic in _TIP[None].items()]

# --- CoOp: the few-shot runs' config per shot count (COOP.md), 16 random context vectors ------------


def _coop_config(shots: int) -> tuple[str, str]:
    """(config file, COOP.md line) of CoOp's few-shot run at `shots` (ImageNet aside)."""
    name, line = ("vit_b16_ep50", "18") if shots <= 1 else ("vit_b16_ep100", "19-20") if shots <= 4 else ("vit_b16", "21-22")
    return f"{COOP}/configs/trainers/CoOp/{name}.yaml", line


def _coop_row(name: str, value: Callable[[int], object], line: int) -> Row:
    def at(shots: int) -> Choice:
        path, doc = _coop_config(shots)
        return Choice(value(shots), f"{_src(path, line)} ({COOP}/COOP.md:{doc})")

    return Row(f"coop_{name}", ("coop",), at(16), shots=at)


COOP_ROWS = [
    _coop_row("epochs", lambda k: 50 if k <= 1 else 100 if k <= 4 else 200, 18),
    _coop_row("lr", lambda k: 0.002, 17), _coop_row("batch", lambda k: 32, 3),
    Row("coop_n_ctx", ("coop",), Choice(16, _src(f"{COOP}/COOP.md", "18-22"))),
    Row("coop_ctx_init", ("coop",), Choice("", _src(f"{COOP}/train.py", 93))),
]

# --- KgCoOp, CoCoOp, MaPLe, PromptSRC: one config file each ------------------------------------------

_KG_YAML = f"{KGCOOP}/KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml"
_COCOOP_YAML = f"{COOP}/configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"
_MAPLE_YAML = f"{MAPLE}/configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"
_SRC_YAML = f"{PROMPTSRC}/configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml"
_GPA = ("the paper's fine-grained / specialised datasets take the config's values for StanfordCars, Flowers102, "
        "FGVCAircraft, DTD, EuroSAT")


def _gpa(name: str, generic: float, fine: float, line: int) -> Row:
    official = Choice(fine, _src(_SRC_YAML, f"{line} (line 45 names the datasets)"))
    chosen = Choice(fine, f"gcpl: {_GPA} ({_SRC_YAML}:45-47)")
    return Row(f"src_{name}", ("promptsrc",), Choice(generic, _src(_SRC_YAML, line - 3)),
               {"cars": official, "flowers102": official, **dict.fromkeys(SPECIALISED, chosen)})


PROMPT_ROWS = [
    *_every(("kgcoop",), "kg", _KG_YAML, lr=(0.002, 17), batch=(128, 3), epochs=(100, 18)),
    Row("kg_ctx_init", ("kgcoop",), Choice("a photo of a", _src(_KG, 96))),
    Row("kg_lambda_", ("kgcoop",), Choice(8.0, _src(f"{KGCOOP}/KgCoOp/scripts/xd_train.sh", 8))),
    *_every(("cocoop",), "cocoop", _COCOOP_YAML, ctx_init=("a photo of a", 34), lr=(0.002, 17), batch=(1, 3),
            epochs=(10, 18)),
    *_every(("maple",), "maple", _MAPLE_YAML, n_ctx=(2, 33), ctx_init=("a photo of a", 34), depth=(9, 36),
            lr=(0.0035, 17), batch=(4, 3), epochs=(5, 18)),
    *_every(("promptsrc",), "src", _SRC_YAML, n_ctx_text=(4, 35), n_ctx_vision=(4, 34), ctx_init=("a photo of a", 36),
            depth_text=(9, 39), depth_vision=(9, 38), text_weight=(25.0, 40), image_weight=(10.0, 41),
            lr=(0.0025, 18), batch=(4, 4), epochs=(50, 19)),
    _gpa("gpa_mean", 30.0, 45.0, 46), _gpa("gpa_std", 30.0, 5.0, 47),
    Row("src_teacher", ("promptsrc",), Choice("ensemble", f"{_src(f'{PROMPTSRC}/trainers/promptsrc.py', '121-128')}, "
                                               f"{PROMPTSRC}/trainers/imagenet_templates.py:3-64")),
]

#: dest -> Row: every official value of every CLIP method
TABLE: dict[str, Row] = {r.dest: r for r in TEXT + TIP_ROWS + COOP_ROWS + PROMPT_ROWS}


def official(dest: str, dataset: str | None = None, shots: int = 16) -> Choice:
    """The official value of one setting for a dataset and shot count (DATASET_PROMPT for the
    prompt of a dataset without one)."""
    return TABLE[dest].choice(dataset, shots)


def resolve(job):
    """(the ClipJob with every None setting of the table filled in for its dataset and shots, the
    source of each setting its method uses: {dest: "official: ..." | "gcpl: ..." | "given"})."""
    have = flat(job.clip)
    values, sources = {}, {}
    for dest, row in TABLE.items():
        if have[dest] is not None:
            source = "given"
        else:
            c = row.choice(job.dataset, job.shots)
            values[dest] = job.template if c.value is DATASET_PROMPT else c.value
            source = c.source
        if job.method in row.methods:
            sources[dest] = source
    if values:
        job = dataclasses.replace(job, clip=replace(job.clip, values))
    return job, sources


def resolved(job):
    """The job with its official values filled in (resolve without the sources)."""
    return resolve(job)[0]


# --- the table as docs/CLIP.md shows it --------------------------------------------------------------------


def _cell(c: Choice, short: bool = True) -> str:
    value = "--template" if c.value is DATASET_PROMPT else f"`{c.value}`" if isinstance(c.value, str) else (
        ", ".join(map(str, c.value)) if isinstance(c.value, tuple) else str(c.value))
    source = c.source.removeprefix("official: ")
    for repo in COMMITS if short else ():  # the table names the repositories once
        source = source.replace(f"{repo}/", "")
    return f"{value} ({source})"


def markdown_table() -> str:
    """TABLE as docs/CLIP.md shows it: the settings that differ per dataset (no dataset, each of
    DATASETS, the paper's other datasets), then those that are the same for every dataset (per
    shot count where they vary), each value with its source."""
    others = (*SPECIALISED, "folder")
    head = ["option", "methods", "no dataset", *DATASETS, "the paper's other datasets"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in (r for r in TABLE.values() if r.datasets):
        rest: dict[str, list[str]] = {}
        for d in others:
            rest.setdefault(_cell(row.choice(d, 16)), []).append(d)
        cell = next(iter(rest)) if len(rest) == 1 else "; ".join(f"{', '.join(ds)}: {c}" for c, ds in rest.items())
        cells = [_cell(row.choice(None, 16)), *(_cell(row.choice(d, 16)) for d in DATASETS), cell]
        lines.append(f"| `{row.option}` | {', '.join(row.methods)} | " + " | ".join(cells) + " |")
    lines += ["", "| option | methods | value for every dataset (source) |", "|---|---|---|"]
    for row in (r for r in TABLE.values() if not r.datasets):
        if row.shots is not None:
            at = {"1 shot": row.shots(1), "2-4 shots": row.shots(2), "5+ shots": row.shots(8)}
            cell = "; ".join(f"{k}: {_cell(c, short=False)}" for k, c in at.items())
        else:
            cell = _cell(row.generic, short=False)
        lines.append(f"| `{row.option}` | {', '.join(row.methods)} | {cell} |")
    return "\n".join(lines) + "\n"
