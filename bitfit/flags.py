"""The conventions of every bitfit command line (``bitfit ...`` and ``python flows/*.py``):
``--version``; Hugging Face's spellings taken as aliases without listing them in ``--help``
(``--a_b`` for every ``--a-b``, and its names where ours differ: ``--learning_rate``,
``--num_train_epochs``, ``--per_device_train_batch_size``, ``--model_name_or_path``,
``--max_seq_length``, ``--output_dir``); and a flag that is none of them refused with the closest
one suggested. Only the standard library is imported, so ``--help`` stays instant.

    parser = Parser(prog="bitfit")   # an argparse.ArgumentParser, subparsers included
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any

EPILOG = ("Flags take Hugging Face's spellings too: underscores (--max_seq_length, "
          "--learning_rate) and its names where ours differ (--num_train_epochs, "
          "--per_device_train_batch_size, --model_name_or_path, --output_dir).")

# Hugging Face's names (run_glue.py, TrainingArguments), dashed -> ours, in the order tried:
# the first that the parser has is meant (--output_dir: bitfit train's --out, else the run home)
HF_NAMES: dict[str, tuple[str, ...]] = {
    "--learning-rate": ("--lr",), "--num-train-epochs": ("--epochs",),
    "--per-device-train-batch-size": ("--batch-size",), "--model-name-or-path": ("--model",),
    "--max-seq-length": ("--max-length",), "--validation-file": ("--dev-file",),
    "--output-dir": ("--out", "--home")}


def version() -> str:
    """``bitfit <version>``: the installed distribution's, else this checkout's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return f"bitfit {installed('bitfit')}"
    except PackageNotFoundError:  # run from a plain checkout
        from bitfit import __version__

        return f"bitfit {__version__}"


class _Version(argparse.Action):
    """``--version``: the version, read only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, help="print bitfit's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(version())
        parser.exit()


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with ``--version``, the Hugging Face spellings and suggestions; its
    subparsers are ``Parser``s too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action=_Version)

    def ours(self, arg: str) -> str:
        """``arg`` with its flag spelled as this parser knows it (a value after ``=`` kept)."""
        flag, sep, value = arg.partition("=")
        if not flag.startswith("--") or flag in self._option_string_actions:
            return arg
        dashed = flag.replace("_", "-")
        for name in (dashed, *HF_NAMES.get(dashed, ())):
            if name in self._option_string_actions:
                return name + sep + value
        return arg

    def _parse_optional(self, arg_string: str) -> Any:
        return super()._parse_optional(self.ours(arg_string))

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}"
                       + _suggestion(self._parsing(parsed), extras))
        return parsed

    def _parsing(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The parser that read the flags: the subcommand's, where there is one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
                if chosen is not None:
                    return chosen
        return self


def _suggestion(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """`` (did you mean --x?)`` for the first unknown flag that is close to one of ``parser``'s."""
    known = [s for s in parser._option_string_actions if s.startswith("--")]
    for extra in extras:
        flag = extra.partition("=")[0].replace("_", "-")
        if flag.startswith("--"):
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""

