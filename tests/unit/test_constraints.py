"""constraints.txt pins every requirement pyproject.toml names (base, dev, dask, demo), each exactly,
within pyproject's own range: a requirement added without its pin fails here, before a user's install."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"constraints.txt: {line!r} is not name==version"
            out[canonical(name)] = version.strip()
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["dev"] + extras["dask"] + extras["demo"]]


def test_every_requirement_is_pinned_within_its_range():
    pinned = pins()
    for req in requirements():
        name = canonical(req.name)
        assert name in pinned, f"{req.name}: required by pyproject.toml, not pinned in constraints.txt"
        assert Version(pinned[name]) in req.specifier, f"{req.name}=={pinned[name]} is outside {req}"


def test_torch_is_pinned_without_a_build_label():
    # torch==2.13.0 matches 2.13.0+cpu and 2.13.0+cu126 alike; a label would refuse every other build
    assert "+" not in pins()["torch"]
