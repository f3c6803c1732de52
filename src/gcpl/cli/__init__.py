"""gcpl: learn one text token per class with a frozen Stable Diffusion (GCPL, CoMPLe) and classify
images by which class prompt denoises them best; `gcpl demo` shows it offline on a bundled model.

Every command's options are derived from its settings dataclass (gcpl.settings); `main(argv)`
takes a list, so tests call it in-process. Errors a user can fix are one line, never a traceback;
a mistyped option or command is answered under the command's usage with "did you mean ...?".
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import __version__
from ..errors import GcplError, Interrupted
from . import commands
from .options import add_options, build


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    settings: type  # the settings dataclass its options come from
    run: Callable  # (settings object, names of the options given) -> None
    example: str = ""
    deprecated: dict = field(default_factory=dict)  # old option -> its replacement(s), or why it was removed


COMMANDS = [
    Command("train", "learn one token per class (GCPL or CoMPLe) from a few images per class", commands.TrainJob,
            commands.train, "gcpl train data/cars --out runs/cars --model tiny --template 'A photo of {}, a type of "
            "car.' --init-word car"),
    Command("eval", "classify labelled test images with the diffusion classifier (learned tokens or zero-shot)",
            commands.EvalJob, commands.evaluate, "gcpl eval data/cars-test --run-dir runs/cars --out runs/cars/eval"),
    Command("predict", "classify unlabelled images (files or folders) with a trained run or zero-shot, with "
            "a confidence per image", commands.PredictJob, commands.predict,
            "gcpl predict photos/ --run-dir runs/cars --out runs/cars/predict",
            deprecated={"--fit-shots": "the confidence is fitted on held-out images, never the support set: "
                                       "--calibration-data or gcpl train --holdout K"}),
    Command("sample", "generate images from a run's learned class tokens, and a labelled grid", commands.SampleJob,
            commands.sample, "gcpl sample --run-dir runs/cars --class 'Acura RL 2012' -n 8 --out runs/cars/samples"),
    Command("demo", "offline demo on the bundled models: zero-shot diffusion, GCPL, CoMPLe, the CLIP "
            "competitors and simple baselines on a fractal benchmark",
            commands.DemoConfig, commands.demo, "gcpl demo --out runs/demo"),
    Command("experiment", "the paper's protocol: methods x shots x seeds on one dataset, then its tables",
            commands.ExperimentConfig, commands.experiment,
            "gcpl experiment --dataset cars --root /data/stanford_cars --out runs/paper/cars",
            deprecated=commands.EXPERIMENT_DEPRECATED),
    Command("report", "rebuild summary.md/.csv and plots of an experiment folder", commands.ReportJob,
            commands.report, "gcpl report runs/paper/cars"),
    Command("prepare", "read a dataset as distributed and write its canonical split JSON", commands.PrepareJob,
            commands.prepare, "gcpl prepare cars --root /data/stanford_cars"),
    Command("fractals", "write the fine-grained IFS fractal benchmark as a class-per-folder dataset",
            commands.FractalsJob, commands.fractals, "gcpl fractals --out data/fractals --test-per-class 20"),
]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=100)


def suggestion(word: str, known) -> str | None:
    """The known name closest to a mistyped one (None: nothing close)."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean ...?" for unknown options and commands (Python 3.14's
    suggest_on_error, on every version), unknown options reported under the command's own usage."""

    commands: dict[str, argparse.ArgumentParser]

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(self, "commands", {}).get(getattr(ns, "command", None), self)
            command.error("unrecognized arguments: " + " ".join(extras))
        return ns

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            options = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            words = message.split(":", 1)[1].split()
            guesses = [g for w in words if w.startswith("--") for g in [suggestion(w.split("=")[0], options)] if g]
            if guesses:
                message += f"; did you mean {' or '.join(dict.fromkeys(guesses))}?"
        elif m := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message):
            choices = re.findall(r"'([^']*)'", m.group(2)) or [c.strip() for c in m.group(2).split(",")]
            guess = suggestion(m.group(1), choices)
            if guess and "you mean" not in message:  # Python 3.14 may have said so already
                message += f"; did you mean {guess}?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gcpl", description=__doc__.split("\n\n")[0], formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"gcpl {__version__}")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log what is happening (INFO level)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is happening (INFO level)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    parser.commands = {}
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=c.help + (f"\n\nexample:\n  {c.example}" if c.example
                                                                     else ""),
                           formatter_class=_Formatter, parents=[verbose])
        add_options(p, c.settings)
        parser.commands[c.name] = p
    return parser


def renamed_options(argv: list[str]) -> list[str]:
    """argv with the deprecated options of its command replaced by today's (a note each)."""
    command = next((c for c in COMMANDS if c.name in argv), None)
    if command is None or not command.deprecated:
        return argv
    out = []
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        new = command.deprecated.get(name)
        if new is None:
            out.append(arg)
            continue
        value = value if eq else next(it, None)
        if isinstance(new, str):  # removed: the reason, and the option is dropped
            print(f"note: gcpl {command.name} {name} is no longer used ({new}); ignored", file=sys.stderr)
            continue
        print(f"note: gcpl {command.name} {name} is deprecated and will be removed; use {' and '.join(new)}",
              file=sys.stderr)
        for n in new:
            out += [n] if value is None else [n, value]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = renamed_options(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse has printed
        return int(e.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    command = next(c for c in COMMANDS if c.name == args.command)
    ns = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in ("command", "verbose")})
    try:
        with commands.clean_warnings() as warned:
            obj, given = build(command.settings, ns)
            command.run(obj, given)
        if warned.n:
            print(f"gcpl {command.name}: {warned.n} warning(s), see above", file=sys.stderr)
    except GcplError as e:
        print(f"gcpl {command.name}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"\ngcpl {command.name}: interrupted; {e}; {commands.how_to_continue(command.name)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\ngcpl {command.name}: interrupted; {commands.how_to_continue(command.name)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
