"""Print every ``oodkit`` command's options (flags, default, required) as JSON.

The test suite compares the current command line with ``tests/unit/cli_snapshot.json``, taken
from the CLI as it was before options were generated from the options dataclasses, so a
refactor cannot silently change a flag or a default. To refresh it after a deliberate change:

    python tools/cli_snapshot.py > tests/unit/cli_snapshot.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """{"train detector": [{"flags": [...], "default": ..., "required": ...}, ...], ...}."""
    import typer

    from oodkit.cli import app

    out: dict[str, list[dict[str, Any]]] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "commands"):  # a group (typer ships its own click)
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*path, name])
            return
        params = []
        for p in cmd.params:
            flags = sorted(p.opts + p.secondary_opts)
            params.append(
                {
                    "flags": flags,
                    "default": None if p.required else _default(p.default),
                    "required": bool(p.required),
                }
            )
        out[" ".join(path)] = sorted(params, key=lambda p: p["flags"])

    walk(typer.main.get_command(app), [])
    return out


if __name__ == "__main__":
    print(json.dumps(snapshot(), indent=1, sort_keys=True))
