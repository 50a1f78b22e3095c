"""The `netlab` command line: click groups that parse arguments and render results.

One module per command group; none holds logic of its own (that lives in kernel/,
observe/, labs/ and bench/). `main` is the console script `netlab = "netlab.cli:main"`.

This file stays tiny on purpose: importing the command groups (click, rich, pyroute2,
cryptography, ...) takes about 0.3 s, and a Ctrl-C in that time used to print an
import traceback. `main` first takes SIGINT and SIGTERM over (recording them, see
netlab.cli.entry), and only then imports the rest.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    try:
        from netlab.cli.entry import main as entry_main  # a few stdlib modules: ~1 ms
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    entry_main()
