"""Checks of a command's values that every command shares, in the same words: counts and
folders. A leaf module: it imports nothing of bitfit, so the command-line runner, the pipeline
and the reproduction all take these from here."""

from __future__ import annotations

import os
import re
from pathlib import Path


def at_least(least: int, **counts: int | None) -> None:
    """Refuse a count that is not a whole number of ``least`` or more (None: the default), in
    the same words for every command."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < least):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be a whole number of {least} or more, got {value!r}")


def positive(**counts: int | None) -> None:
    """Refuse a count below 1 (None means 'the default')."""
    at_least(1, **counts)


def device_name(device: str) -> None:
    """Refuse a device that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether the GPU
    exists is the pipeline's ``check_device``)."""
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")


def writable_folder(path: str | os.PathLike[str], flag: str) -> None:
    """Refuse, before any work, a folder that could not be made or written later: a file, a
    path under a file, or a place this user cannot write to."""
    p = Path(path).expanduser()
    shown = repr(str(path))
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {shown} is a file, not a folder: choose a folder")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {shown} is under {str(existing)!r}, which is a file, not a "
                         "folder: choose a folder that is not inside a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {shown} cannot be written ({str(existing)!r} is not "
                         "writable for you): choose a folder you can write to")
