"""``docs/configuration.md``, generated from the typed configurations (never written by hand).

Every training field (:class:`pretrain.config.TrainConfig`, section by section) and every
preprocessing option (:class:`preprocess.config.PreprocessConfig`) is documented once, in its
``Field(description=...)``; this module renders them with their types, defaults and bounds.

    python -m pretrain config-doc            # rewrite docs/configuration.md
    python -m pretrain config-doc --check    # exit 1 if it differs from the code
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def type_name(kind: Any) -> str:
    """A field's type for a reader: ``int``, ``one of: a, b``, ``int >= 1, or auto``."""
    origin = get_origin(kind)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in get_args(kind))
    if origin in (Union, types.UnionType):
        parts = [type_name(a) for a in get_args(kind) if a is not type(None)]
        text = ", or ".join(p.removeprefix("one of: ") if i else p for i, p in enumerate(parts))
        return text + (", or null" if type(None) in get_args(kind) else "")
    if origin is Annotated:
        base, *meta = get_args(kind)
        return with_bounds(type_name(base), [bound for m in meta for bound in bounds_of(m)])
    if origin is tuple and get_args(kind)[1:] == (Ellipsis,):
        return f"list of {type_name(get_args(kind)[0])}"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in get_args(kind)) + "]"
    return getattr(kind, "__name__", str(kind))


def bounds_of(meta: Any) -> list[str]:
    found = [meta] + list(getattr(meta, "metadata", []))
    return [f"{sign} {getattr(m, name)}" for m in found for name, sign in BOUNDS
            if getattr(m, name, None) is not None]


def with_bounds(kind: str, bounds: list[str]) -> str:
    """``int (>= 1)``; for an optional type, the bounds go with the value: ``int (>= 1), or null``."""
    if not bounds:
        return kind
    value, null, _ = kind.partition(", or null")
    return f"{value} ({', '.join(bounds)})" + (", or null" if null else "")


def describe(field: FieldInfo) -> tuple[str, str, str]:
    """(type with bounds, default as YAML spells it, description) of one field."""
    kind = with_bounds(type_name(field.annotation), [b for m in field.metadata for b in bounds_of(m)])
    default = "required" if field.is_required() else f"`{json.dumps(field.default)}`".replace('"', "")
    return kind, default, field.description or ""


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    out = ["| field | type | default | what it does |", "|---|---|---|---|"]
    return out + [f"| `{n}` | {escape(k)} | {escape(d)} | {escape(w)} |" for n, k, d, w in rows]


def sections() -> dict[str, type[BaseModel]]:
    """The training config's sections (``model``, ``data``, ...), in order."""
    from pretrain.config import TrainConfig

    return {name: field.annotation for name, field in TrainConfig.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}


def training_sections() -> list[str]:
    from pretrain.config import TrainConfig

    top = [(name, *describe(f)) for name, f in TrainConfig.model_fields.items() if name not in sections()]
    out = ["", "### top level", "", *table(top)]
    for name, section in sections().items():
        rows = [(f"{name}.{n}", *describe(f)) for n, f in section.model_fields.items()]
        out += ["", f"### `{name}`", "", (section.__doc__ or "").strip(), "", *table(rows)]
    return out


def preprocessing_options() -> list[str]:
    from preprocess.config import PreprocessConfig, flag_of

    rows = []
    for name, field in PreprocessConfig.model_fields.items():
        kind, default, what = describe(field)
        flag = flag_of(name) + (" / --no-" + flag_of(name)[2:] if field.annotation is bool else "")
        rows.append((flag, kind, default, what))
    return ["", *table(rows)]


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the code by `python -m pretrain config-doc`; do not edit (a test compares the two).",
        "",
        "## Training",
        "",
        "`python -m pretrain --config RECIPE.yaml [section.field=value ...]`: a recipe is YAML with these sections; `section.field=value` overrides any field (the value is",
        "read as YAML). Every field is validated before any work starts; a wrong name or value fails",
        "naming the field. The configuration as run is written to `RUN_DIR/config.yaml`.",
        *training_sections(),
        "",
        "## Preprocessing",
        "",
        "`python -m preprocess --input ... --output ... --vocab ... [options]`. Any other option goes to Apache Beam (e.g. `--runner`, `--direct_num_workers`); an option that is",
        "neither the job's nor Beam's is refused with the closest names.",
        *preprocessing_options(),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    from preprocess.cli import parser

    p = parser("python -m pretrain config-doc", "Write docs/configuration.md from the typed configurations.")
    p.add_argument("--check", action="store_true", help="only compare: exit 1 when the file differs from the code")
    p.add_argument("--output", type=Path, default=DOC, help="where to write it")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} differs from the code: run python -m pretrain config-doc", file=sys.stderr)
            return 1
        print(f"{args.output} matches the code")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


def usage_sections() -> str:
    """The training config's sections, one line each, for ``python -m pretrain --help``."""
    return "\n".join(f"  {name:<11} {(section.__doc__ or '').strip()}" for name, section in sections().items())
