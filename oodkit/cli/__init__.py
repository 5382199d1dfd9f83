"""The ``oodkit`` command line: thin Typer wrappers over library functions, split by job —
``base`` (the application, one-line errors, the entry point), ``generator`` (commands built
from options dataclasses), ``commands`` (the glue per command) and ``present`` (what they
print)."""

from oodkit.cli import commands as _commands  # noqa: F401 - registers every command
from oodkit.cli.base import app, main, redact

__all__ = ["app", "main", "redact"]
