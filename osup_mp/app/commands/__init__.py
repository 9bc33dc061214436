"""The server side of the control commands, one module per group (after circus' commands/).

Each group module maps the :mod:`osup_mp.wire.api` declarations it serves to handlers; a
handler gets the tree's :class:`Context`, arguments already checked against the declaration,
and ``respond``. :func:`handlers` binds them all for the control server and refuses to start
a tree where a declared command has no handler, or a handler no declaration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from osup_mp.app.commands import agents, experiment, health, mirror, storage, tree
from osup_mp.app.commands.agents import tree_calls
from osup_mp.app.commands.context import Context
from osup_mp.runtime.control import Handler, Respond
from osup_mp.wire import api

__all__ = ["Context", "handlers", "tree_calls"]

GroupHandler = Callable[[Context, dict[str, Any], Respond], None]
GROUPS = (tree, agents, storage, health, mirror, experiment)


def handlers(ctx: Context) -> dict[str, Handler]:
    """Every control command's handler, bound to ``ctx``."""
    table: dict[str, GroupHandler] = {}
    for group in GROUPS:
        for command, handler in group.HANDLERS.items():
            if command.name in table:
                raise RuntimeError(f"control command {command.name} is served twice")
            table[command.name] = handler
    if table.keys() != api.CONTROL.keys():
        raise RuntimeError(
            f"control commands without a handler: {sorted(api.CONTROL.keys() - table.keys())}; "
            f"handlers without a declaration: {sorted(table.keys() - api.CONTROL.keys())}"
        )
    return {name: functools.partial(handler, ctx) for name, handler in table.items()}
