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


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that shows defaults; ``description`` may be a docstring's paragraph."""
    return argparse.ArgumentParser(prog=prog, description=plain(description), allow_abbrev=False,
                                   formatter_class=_ShowDefaults)


def plain(text: str) -> str:
    """Docstring text without reStructuredText's literal quotes and roles."""
    for role in (":class:", ":func:", ":mod:", ":meth:"):
        text = text.replace(role, "")
    return text.replace("``", "`")
