"""Reading and checking what a user typed on the command line, shared by every command.

Everything here is torch-free, so bad input is refused before the engine is imported.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Dict

from .api import InputError, check_setting, parse_setting

COMMON_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def settings_changes(args, options: Dict[str, str]) -> dict:
    """DragConfig changes from shorthand `options` (argparse dest -> setting) and `--set KEY=VALUE`,
    each read and checked by the setting's type and range; a setting given twice is an error."""
    changes, spelled = {}, {}

    def add(name, given, check, value):
        try:
            checked = check(name, value)
        except InputError as error:
            raise InputError(f"{given}: {error}") from None
        if name in changes:
            raise InputError(f"{name} is given twice ({spelled[name]} and {given}); give it once")
        changes[name], spelled[name] = checked, given

    for dest, name in options.items():
        value = getattr(args, dest)
        if value is not None:
            add(name, f"--{dest.replace('_', '-')} {value}", check_setting, value)
    for assignment in args.set or []:
        key, separator, text = assignment.partition("=")
        if not separator:
            raise InputError(f"--set expects KEY=VALUE, got {assignment!r}")
        add(key.strip(), f"--set {assignment}", parse_setting, text)
    return changes


def check_output_file(path: Path, option: str, image: bool = False) -> None:
    """Fail now, not after the edit, when `path` cannot be written (as an image, with `image`)."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name" + (f" such as {path / 'edited.png'}" if image else ""))
    if image:
        from PIL import Image

        writable = {ext for ext, format in Image.registered_extensions().items() if format in Image.SAVE}
        if path.suffix.lower() not in writable:
            raise InputError(f"{option} {path}: Pillow cannot write {path.suffix or 'a file without extension'!r}; "
                             f"use one of {', '.join(e for e in COMMON_IMAGE_EXTENSIONS if e in writable)}")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{option} {path}: no permission to overwrite this file")
    check_output_folder(path.parent, f"{option} {path}")


def check_output_folder(folder: Path, option: str) -> None:
    """The folder exists and can be written to, or can be created."""
    existing = folder
    while not existing.exists():          # folders that will be created: their first existing ancestor decides
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option}: cannot create the folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option}: no permission to write in the folder {existing}")


def sweep_values(args) -> Dict[str, list]:
    """`--sweep KEY=V1,V2,...` options as {setting: [typed values]}, each value checked as `--set` would."""
    sweeps: Dict[str, list] = {}
    for text in args.sweep or []:
        key, separator, values = text.partition("=")
        key = key.strip()
        if not separator or not values.strip():
            raise InputError(f"--sweep expects KEY=V1,V2,..., got {text!r}")
        if key in sweeps:
            raise InputError(f"--sweep {key} is given twice; list all its values in one --sweep")
        try:
            sweeps[key] = [parse_setting(key, value) for value in values.split(",")]
        except InputError as error:
            raise InputError(f"--sweep {text}: {error}") from None
    return sweeps


def whole_number(low: int):
    """argparse type: an integer >= `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}")
        return value

    return parse
