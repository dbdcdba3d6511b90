"""mkdocs hook: reference tables generated from the code itself, so the pages cannot drift from it.

Placeholders in a page's Markdown are replaced when the site is built:
`<!-- cli-reference -->` by the help of every command (from `dragwidget.cli.build_parser`),
`<!-- config-reference -->` by every `DragConfig` field with its default, its description and the
comment that gives its reference value, `<!-- widget-traits -->` by the widget's traits.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re


def _commands(parser: argparse.ArgumentParser, name: str):
    """(full command name, parser) for `parser` and every subcommand below it, depth first."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub_parser in action.choices.items():
                yield from _commands(sub_parser, f"{name} {sub_name}")


def cli_reference() -> str:
    os.environ["COLUMNS"] = "100"            # argparse wraps help at the terminal's width
    from dragwidget.cli import build_parser

    blocks = []
    for name, parser in _commands(build_parser(), "dragwidget"):
        blocks.append(f"### `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(blocks)


def _field_comments(cls) -> dict:
    """Each dataclass field's comment: the `#` lines right above its definition (shared by a group)."""
    lines = inspect.getsource(cls).splitlines()
    comments, pending = {}, []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# ").rstrip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
            comments[match.group(1)] = " ".join(pending) or comments.get("_previous", "")
            comments["_previous"] = comments[match.group(1)]
            continue
        if not stripped:
            pending = []
            comments["_previous"] = ""
    comments.pop("_previous", None)
    return comments


def config_reference() -> str:
    from dragwidget.config import DragConfig

    comments = _field_comments(DragConfig)
    rows = ["| field | default | what it is | notes and reference value |", "|---|---|---|---|"]
    for field in dataclasses.fields(DragConfig):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        what = field.metadata.get("help", "").replace("|", "\\|")
        notes = comments.get(field.name, "").replace("|", "\\|")
        rows.append(f"| `{field.name}` | `{default!r}` | {what} | {notes} |")
    return "\n".join(rows) + "\n"


def widget_traits() -> str:
    from dragwidget.widget import DragWidget
    import ipywidgets

    own = set(DragWidget.class_traits()) - set(ipywidgets.VBox.class_traits())
    rows = ["| trait | type | default | what it is |", "|---|---|---|---|"]
    for name in sorted(own):
        trait = DragWidget.class_traits()[name]
        rows.append(f"| `{name}` | {type(trait).__name__} | `{trait.default_value!r}` | "
                    f"{(trait.help or '').replace('|', '/')} |")
    return "\n".join(rows) + "\n"


PLACEHOLDERS = {"<!-- cli-reference -->": cli_reference, "<!-- config-reference -->": config_reference,
                "<!-- widget-traits -->": widget_traits}


def on_page_markdown(markdown: str, **_) -> str:
    for placeholder, render in PLACEHOLDERS.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, render())
    return markdown
