"""Small pieces shared by `rlab`'s command modules (typer only, so any of them can import it cheaply).

- `fail`: print ``error: ...`` to stderr and return the `typer.Exit` to raise (code 1, or 2 for usage).
- `SingleCommandGroup`: for a command that a track adds through the ``rlab.commands`` entry points
  (``rlab export RUN --format onnx``, ``rlab drive --policy ...``). ``add_typer`` makes every app a group,
  and a group stops parsing options at its first positional (it would be a subcommand's name); an app
  built with ``typer.Typer(cls=SingleCommandGroup)`` whose callback is the command parses like a plain
  command, and an extra argument is an error.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class SingleCommandGroup(TyperGroup):
    allow_interspersed_args = True
    allow_extra_args = False

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super(TyperGroup, self).parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:  # without TyperGroup's "COMMAND [ARGS]..."
        return super(TyperGroup, self).collect_usage_pieces(ctx)
