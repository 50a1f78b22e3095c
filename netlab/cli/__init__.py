"""The `netlab` command line: click groups that parse arguments and render results.

One module per command group; none holds logic of its own (that lives in kernel/,
observe/, labs/ and bench/). `main` is the console script `netlab = "netlab.cli:main"`.
"""

from __future__ import annotations

from netlab.cli.app import main

__all__ = ["main"]
