"""Errors a user can cause (bad path, bad file, bad flag).

The CLI turns a ``UserError`` into one line on stderr and exit code 2 instead
of a traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input that they can fix; the message says how."""


def describe_validation_error(exc: Exception) -> str:
    """The first problem of a pydantic ``ValidationError`` as ``dotted.field: message`` (one line)."""
    first = exc.errors()[0]  # type: ignore[attr-defined]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
