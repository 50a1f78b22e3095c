"""Errors a user can act on. The CLI prints these as one message, never a traceback."""

from __future__ import annotations


class NetlabError(Exception):
    """Base for every error the CLI reports plainly (exit code 2)."""


class TopologyError(NetlabError):
    """A topology file is wrong. Names the file, the document, the field path and the fix."""

    def __init__(self, file: str, document: int | None, path: str, problem: str, fix: str,
                 line: int | None = None) -> None:
        self.file, self.document, self.path = file, document, path
        self.problem, self.fix, self.line = problem, fix, line
        where = file
        if line:
            where += f":{line}"
        if document:
            where += f" (document {document})"
        at = f" at {path}" if path else ""
        super().__init__(f"{where}{at}: {problem}\n  fix: {fix}")


class KernelError(NetlabError):
    """Applying desired state failed; the lab is rolled back before this reaches the user."""


class LabNotFound(NetlabError):
    pass


class BenchError(NetlabError):
    """A benchmark could not measure (a client or helper process failed); says which and why."""
