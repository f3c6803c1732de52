"""The command lines of tools/pretrain_tiny.py and tools/pretrain_tiny_clip.py: their options come
from settings dataclasses (gcpl.settings fields, added by gcpl.cli.options.add_options, one
argument group per dataclass): the run-control options both scripts share (`RunOptions`, with each
script's default folder), the tiny SD script's model-size and sampling options (the pretraining
settings themselves are `pretraining.sd.PretrainConfig` and `pretraining.clip.ClipPretrainConfig`),
and the command lines a model card prints to reproduce a run and the chain of runs it continues.

The option dataclasses live here, not in the scripts: a script loaded by file path (importlib's
spec_from_file_location) is a module missing from sys.modules, where a dataclass cannot be defined.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gcpl.cli.options import add_options, build
from gcpl.settings import setting
from gcpl.tiny_model import TinySDConfig

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "src" / "gcpl" / "assets"


@dataclass
class RunOptions:
    """Where a run writes and how this call runs it; none of it changes the weights (a script's
    subclass gives `out` its default)."""

    out: Path = setting(help="model folder to write", parse=Path, identity=False)
    ckpt_dir: Path | None = setting(None, "checkpoints (default: <out>/checkpoints)", parse=Path, identity=False)
    resume: bool = setting(False, "continue from the latest checkpoint", identity=False)
    clean: bool = setting(False, "delete the checkpoints after a finished run", identity=False)
    init_from: Path | None = setting(
        None, "continued pretraining: start from the final weights of the finished run checkpointed in CKPT_DIR "
        "(its --ckpt-dir), with a fresh schedule; the same model flags are required", parse=Path, metavar="CKPT_DIR",
        identity=False)
    stop_after: int | None = setting(None, "stop (with a checkpoint) after this many steps", identity=False)

    def loop_args(self) -> dict:
        """The keyword arguments of `pretrain` / `pretrain_clip` these options give."""
        return {"out": self.out, "ckpt_dir": self.ckpt_dir, "resume": self.resume, "stop_after": self.stop_after,
                "init_dir": self.init_from}

    def finish(self) -> None:
        """After a finished run: delete its checkpoints when asked to (--clean)."""
        if self.clean:
            shutil.rmtree(self.ckpt_dir or self.out / "checkpoints", ignore_errors=True)


@dataclass
class SDRunOptions(RunOptions):
    out: Path = setting(ASSETS / "tiny-sd", "pipeline folder to write", parse=Path, identity=False)


@dataclass
class ClipRunOptions(RunOptions):
    out: Path = setting(ASSETS / "tiny-clip", "model folder to write", parse=Path, identity=False)


@dataclass
class SDModelOptions:
    """The tiny SD script's model size (defaults: the bundled model's), named as the fields of
    gcpl.tiny_model.TinySDConfig they set; its other fields keep their defaults."""

    text_hidden: int = setting(64, "text encoder width (= the UNet's cross-attention width)")
    text_layers: int = setting(3, "text encoder layers")
    text_heads: int = setting(4, "text encoder attention heads")
    unet_channels: tuple[int, ...] = setting((32, 64), "UNet channels per level, comma list, e.g. 32,64")
    unet_layers_per_block: int = setting(1, "resnet layers per UNet block", flag="--unet-layers")
    unet_head_dim: int = setting(8, "attention heads (diffusers' attention_head_dim)", flag="--unet-heads")
    vae_channels: tuple[int, ...] = setting((32, 64), "VAE channels per level, comma list, e.g. 32,64")
    image_size: int = setting(32, "image size in pixels")
    prediction_type: str = setting("epsilon", "what the UNet predicts", choices=("epsilon", "v_prediction"))

    def config(self) -> TinySDConfig:
        return TinySDConfig(**dataclasses.asdict(self))


@dataclass
class SampleOptions:
    """How the tiny SD script's samples.png is generated (not part of the run)."""

    sample_steps: int = setting(50, "DDIM steps for samples.png")
    guidance: float = setting(4.0, "guidance scale for samples.png")


@dataclass(frozen=True)
class Script:
    """One pretraining script's command line: its `run` options, then `groups`, each an argument
    group's title and the settings dataclass its options come from; `skip` names fields the script
    keeps at their defaults; `run_dirs` is where the model card's chain of source runs
    checkpoints (<run_dirs>1, 2, ...)."""

    path: str
    doc: str
    run: type
    groups: dict[str, type]
    run_dirs: str
    skip: tuple[str, ...] = ()

    def parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(description=self.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        for title, cls in {"run": self.run, **self.groups}.items():
            add_options(p.add_argument_group(title), cls, self.skip)
        return p

    def parse(self, argv: list[str]) -> list:
        """The run options, then one settings object per group (defaults for what `argv` does not give)."""
        ns = self.parser().parse_args(argv)
        return [build(cls, ns)[0] for cls in (self.run, *self.groups.values())]

    def main(self, argv: list[str] | None, parse: Callable, train: Callable, save: Callable,
             write_card: Callable[[Path, dict], None]) -> int:
        """The script: `--card-only [FOLDER]` rebuilds a saved folder's card from its gcpl_build.json;
        otherwise `parse(argv)` gives (run options, config), `train(config, **run.loop_args())`
        trains (None: stopped by --stop-after, to be resumed), `save(argv, run, config, result, t0)`
        writes the folder, and --clean deletes the checkpoints."""
        raw = sys.argv[1:] if argv is None else list(argv)
        if raw[:1] == ["--card-only"]:
            out = Path(raw[1]) if len(raw) > 1 else self.run().out
            write_card(out, json.loads((out / "gcpl_build.json").read_text()))
            print(f"wrote {out / 'README.md'}")
            return 0
        run, cfg = parse(raw)
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            print("--device cuda: no CUDA device available", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        res = train(cfg, **run.loop_args())
        if res is None:
            print(f"stopped after {run.stop_after} steps; continue with --resume")
            return 0
        save(raw, run, cfg, res, t0)
        run.finish()
        return 0

    def flags(self) -> dict[str, str]:
        """Field (dest) -> its option string."""
        return {a.dest: a.option_strings[0] for a in self.parser()._actions if a.option_strings}

    def command(self, identity: dict, ckpt_dir: str, init_dir: str | None = None) -> str:
        """The command line that makes a run with this identity (for the model card): its folders,
        then every identity setting that is an option, in the identity's order, the model's last."""
        flags = self.flags()
        shown = [("out", f"{ckpt_dir}-model"), ("ckpt_dir", ckpt_dir), *([("init_from", init_dir)] if init_dir else [])]
        shown += [(k, v) for k, v in identity.items() if k != "model"] + list(identity.get("model", {}).items())
        return " ".join([self.path] + [f"{flags[k]} {_text(v)}" for k, v in shown if k in flags])

    def source_commands(self, cfg, last_ckpt_dir: str) -> list[str]:
        """Commands for the chain of runs a continuation (`cfg.init`) starts from, oldest first; the
        last one writes its checkpoints to `last_ckpt_dir` (this run's --init-from)."""
        chain = [src["config"] for src in cfg.sources()]
        dirs = [f"{self.run_dirs}{i + 1}" for i in range(len(chain) - 1)] + [last_ckpt_dir]
        return [self.command(c, dirs[i], dirs[i - 1] if i else None) for i, c in enumerate(chain)]

    def reproduce(self, argv: list[str], out: Path) -> str:
        """A run's own command line as its model card shows it (see `reproduce_argv`)."""
        return " ".join([self.path, *reproduce_argv(argv, out)])


def _text(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def reproduce_argv(argv: list[str], out: Path) -> list[str]:
    """A run's command line as the model card shows it: `--out` names the folder the card is in
    (the weights do not depend on where they were first written) and the run-control flags that
    do not change the weights (`--resume`, `--stop-after N`) are left out: resuming is bit-exact."""
    try:
        where = str(Path(out).resolve().relative_to(REPO))
    except ValueError:
        where = str(out)
    shown, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--resume":
            i += 1
        elif a in ("--stop-after", "--out"):
            i += 2
        elif a.startswith(("--stop-after=", "--out=")):
            i += 1
        else:
            shown.append(a)
            i += 1
    return ["--out", where, *shown]

