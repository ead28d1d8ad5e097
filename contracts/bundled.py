"""YAML files a user names by path or by the name of one the package ships (recipes, curation configs)."""

from __future__ import annotations

from pathlib import Path

from videor4.contracts.errors import UserError


def resolve_yaml(value: str | Path, directory: Path, what: str) -> Path:
    """``value`` if it is a file, else ``<directory>/<value>.yaml``; a miss lists the bundled names."""
    path = Path(value)
    if path.is_file():
        return path
    bundled = directory / f"{value}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
    raise UserError(f"{what} not found: {value} (a YAML file, or a bundled {what}: {names})")
