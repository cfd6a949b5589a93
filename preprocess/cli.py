"""How every command line of the project is built: one argparse style for all of them.

``--help`` shows each option's default, and descriptions taken from docstrings lose their
reStructuredText markup (``literal`` quotes), so what a user reads is plain text.
"""

from __future__ import annotations

import argparse


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default, where it has one (not "None" for required or optional-without-default)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, argparse.SUPPRESS) or action.required or not action.option_strings:
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n  " in text:  # a list with one indented item per line (an epilog): kept as written
            return "".join(indent + line + "\n" for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that shows defaults; ``description`` may be a docstring's paragraph;
    an ``epilog`` of indented lines is shown as written."""
    return argparse.ArgumentParser(prog=prog, description=plain(description), epilog=epilog, allow_abbrev=False,
                                   formatter_class=_ShowDefaults)


def plain(text: str) -> str:
    """Docstring text without reStructuredText's literal quotes and roles."""
    for role in (":class:", ":func:", ":mod:", ":meth:"):
        text = text.replace(role, "")
    return text.replace("``", "`")
