"""Shell completion: commands and options (click's own), lab names and pod names (ours).

Why attach by parameter name: every command names its lab argument `lab` and its pod
argument or option `pod`, so one walk over the command tree (`attach`) gives all of
them, including commands added later, the same completion. Lab and pod names are
read from the lab records under /run/netlab, which any user may read, so completion
works without sudo (and never fails: a missing or torn record completes nothing).

Install: `netlab completion bash > ~/.local/share/bash-completion/completions/netlab`
(zsh and fish: see `netlab completion --help` and the README).
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class

from netlab.kernel.ownership import LabRecord, all_labs

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_NETLAB_COMPLETE"


def labs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name) for name in all_labs() if name.startswith(incomplete)]


def pods(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`ns/name` of every pod of the lab named earlier on the line, and unique bare names."""
    record = _record(ctx)
    if record is None:
        return []
    found = record.summary.get("pods", [])
    names = [f"{p['namespace']}/{p['name']}" for p in found]
    bare = [p["name"] for p in found]
    names += [n for n in bare if bare.count(n) == 1]
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def components(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """What `netlab logs LAB COMPONENT` takes: process names, `ztunnel`, and pods."""
    record = _record(ctx)
    if record is None:
        return []
    names = [p.name for p in record.processes]
    names += sorted({n.split("/", 1)[0] for n in names if "/" in n})
    items = [CompletionItem(n) for n in names if n.startswith(incomplete)]
    return items + pods(ctx, param, incomplete)


def _record(ctx: click.Context) -> LabRecord | None:
    found = all_labs()
    # While an option still waits for its value, click leaves the words it has not
    # assigned in ctx.args: the lab is then the first of them that names a lab.
    lab = ctx.params.get("lab") or next((a for a in ctx.args if a in found), None)
    if not lab:
        lab = found[0] if len(found) == 1 else None
    try:
        return LabRecord.load(lab) if lab else None
    except (OSError, TypeError, KeyError, ValueError):
        return None


COMPLETERS = {"lab": labs, "pod": pods, "component": components}


def attach(group: click.Group) -> None:
    """Give every `lab`, `pod` and `component` parameter in the tree its completer, unless
    the command set one itself."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            attach(command)
        for param in command.params:
            completer = COMPLETERS.get(param.name or "")
            if completer is not None and getattr(param, "_custom_shell_complete", None) is None:
                # What click's `shell_complete=` argument sets; assigned after the fact so
                # the command modules need not know about completion.
                param._custom_shell_complete = completer  # type: ignore[attr-defined]


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (commands, options, lab and pod names).

    \b
    bash:  netlab completion bash > ~/.local/share/bash-completion/completions/netlab
    zsh:   netlab completion zsh > ~/.zfunc/_netlab   (with fpath+=~/.zfunc; autoload -Uz compinit; compinit)
    fish:  netlab completion fish > ~/.config/fish/completions/netlab.fish
    Then open a new shell. With sudo, root's shell needs the script too (or use `sudo -E`).
    """
    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # every name in SHELLS is one click knows
    click.echo(cls(root, {}, "netlab", COMPLETE_VAR).source())


COMMANDS: list[click.Command] = [completion]
