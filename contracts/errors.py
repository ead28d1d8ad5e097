"""Errors a user can cause (bad path, bad file, bad flag).

The CLI turns a ``UserError`` into one line on stderr and exit code 2 instead
of a traceback; everything else is a bug and keeps its traceback. Errors raised while reading a user's
file are turned into ``UserError`` where that file is read (:func:`user_input`), not by the CLI guessing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input that they can fix; the message says how."""


def describe_validation_error(exc: Exception) -> str:
    """The first problem of a pydantic ``ValidationError`` as ``dotted.field: message`` (one line)."""
    first = exc.errors()[0]  # type: ignore[attr-defined]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def describe_input_error(exc: BaseException) -> str:
    """One line saying what is wrong with a file or value the user gave (no type names, no traceback)."""
    import json

    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        text = describe_validation_error(exc)
    elif isinstance(exc, json.JSONDecodeError):
        text = f"not valid JSON (line {exc.lineno}: {exc.msg})"
    elif isinstance(exc, UnicodeError):
        text = f"not UTF-8 text ({exc.reason})" if isinstance(exc, UnicodeDecodeError) else f"bad text ({exc})"
    elif isinstance(exc, RecursionError):
        text = "nested too deeply to read"
    elif isinstance(exc, IsADirectoryError):
        text = "is a directory, not a file"
    elif isinstance(exc, OSError):
        text = exc.strerror or str(exc)
    elif isinstance(exc, KeyError):
        text = f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _input_error_types() -> tuple[type[BaseException], ...]:
    types: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, RecursionError)
    try:
        import yaml
    except ImportError:  # pragma: no cover - yaml is a dependency
        return types
    return (*types, yaml.YAMLError)


@contextmanager
def user_input(what: object) -> Iterator[None]:
    """Errors raised while *reading or validating user input* become one :class:`UserError` line naming ``what``.

    OSError, ValueError (JSON, Unicode, pydantic, Arrow), KeyError, RecursionError (deeply nested JSON) and
    YAML errors inside the block are the input's fault: the CLI prints one line and exits 2. Wrap only the
    reading of a user's file or flag, never whole commands, so the same types raised by a bug elsewhere keep
    their traceback (exit 1).
    """
    try:
        yield
    except UserError:
        raise
    except _input_error_types() as exc:
        raise UserError(f"{what}: {describe_input_error(exc)}") from exc


def read_json_object(path: Path, absent: str, what: str) -> dict:
    """A JSON object the toolkit wrote earlier into a user's folder (a manifest): ``absent`` is the error when the
    file is missing, ``what`` names it when it cannot be read or is not an object."""
    path = Path(path)
    if not path.is_file():
        raise UserError(absent)
    with user_input(f"{path}: not a readable {what}"):
        data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a readable {what} (expected a JSON object)")
    return data
