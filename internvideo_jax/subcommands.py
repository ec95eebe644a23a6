"""A command line of subcommands (`python -m internvideo_jax.localization score ...`): one table
of name -> (help, add_arguments(parser), run(args)), and errors of the given types printed as one
`error: ...` line with exit status 2. Imports nothing heavy: the tools that use it start fast."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def run(prog: str, description: str, commands: dict[str, tuple[str, Callable, Callable]],
        user_errors: tuple[type[BaseException], ...], argv: list[str] | None = None) -> int:
    """Parse argv (default: sys.argv[1:]) into one of `commands` and run it; 0, or 2 after a
    user error."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _) in commands.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        commands[args.command][2](args)
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
