"""Parse iptables-save / iptables-restore text into a canonical form for comparison.

Three spellings of the same rules meet in netlab's tests: Istio's golden files (restore
input, or one `iptables ...` command per line for 1.23), our own rendering, and what
`iptables-save` prints back from the kernel. The kernel's printout differs in ways that
do not change a single packet's fate: it adds `-m tcp` for `--dport`, prints marks in hex
(`1337` -> `0x539`), writes `/32` on host addresses, prints the default TPROXY `--on-ip
0.0.0.0` and CONNMARK masks, reorders matches, and adds counters and comments.

Canonicalisation folds exactly those differences and nothing else: every port, address,
mark, mask, interface, negation and target option survives into the canonical string,
and rule order inside a chain is kept (it is what decides a packet's path). Matches
inside one rule are sorted because they are ANDed, so their order cannot matter.
"""

from __future__ import annotations

import difflib
import ipaddress
import shlex
from dataclasses import dataclass, field

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
FULL_MASK = 0xFFFFFFFF

# Long spellings of the basic options, as iptables accepts them.
_BASIC_ALIASES = {
    "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
    "--in-interface": "-i", "--out-interface": "-o", "--protocol": "-p",
    "--fragment": "-f",
}
_BASIC_ORDER = ("-s", "-d", "-i", "-o", "-p", "-f")
_PROTO_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "132": "sctp"}

# Option spellings that mean the same thing.
_OPTION_ALIASES = {
    "--destination-port": "--dport", "--source-port": "--sport",
    "--destination-ports": "--dports", "--source-ports": "--sports",
    "--to-port": "--to-ports",
}
_PORT_OPTIONS = {"--dport", "--sport", "--to-ports", "--on-port"}
_MARK_OPTIONS = {"--mark", "--set-xmark", "--tproxy-mark"}
_MASK_OPTIONS = {"--nfmask", "--ctmask", "--mask"}
_ADDR_OPTIONS = {"--on-ip", "--to-source", "--to-destination"}


class ParseError(ValueError):
    """A line the parser does not understand: fail loudly rather than compare wrongly."""


@dataclass
class Ruleset:
    """One address family's tables.

    `tables[table][chain]` is the policy of a built-in chain whose policy is not the
    default ACCEPT, or "-" for a user chain. `rules` is `(table, chain, rule)` grouped by
    table and chain (sorted by name) with the order inside each chain preserved.
    """

    tables: dict[str, dict[str, str]] = field(default_factory=dict)
    rules: list[tuple[str, str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A flat, diff-friendly listing."""
        out = []
        for table in sorted(self.tables):
            for chain, policy in sorted(self.tables[table].items()):
                out.append(f"{table}: chain {chain} {policy}")
        out += [f"{t}: -A {c} {r}" for t, c, r in self.rules]
        return out

    def chain(self, table: str, chain: str) -> list[str]:
        """The canonical rules of one chain, in order."""
        return [r for t, c, r in self.rules if t == table and c == chain]


def diff(expected: Ruleset, actual: Ruleset, names: tuple[str, str] = ("expected", "actual")) -> str:
    """A unified diff of two rulesets, for assertion messages."""
    return "\n".join(difflib.unified_diff(expected.lines(), actual.lines(), *names, lineterm=""))


def parse(text: str) -> Ruleset:
    """Parse text holding one address family; see `parse_all` for files with two."""
    sets = parse_all(text)
    if len(sets) != 1:
        raise ParseError(f"expected one ruleset, found {len(sets)}; use parse_all()")
    return sets[0]


def parse_all(text: str) -> list[Ruleset]:
    """Parse text that may hold several families (Istio's tproxy golden has v4 then v6).

    A new family starts when a `*table` header repeats within the current one, or when
    command lines switch between `iptables` and `ip6tables`.
    """
    builders: list[_Builder] = [_Builder()]
    table: str | None = None
    seen: set[str] = set()
    cmd_family: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line in ("iptables-save", "ip6tables-save"):
            continue  # blank, comment, or Istio's test-stub header lines
        if line.startswith("[") and "]" in line:
            line = line.split("]", 1)[1].strip()  # `iptables-save -c` counters
        try:
            if line.startswith("*"):
                table = line[1:].strip()
                if table in seen:
                    builders.append(_Builder())
                    seen = set()
                seen.add(table)
                builders[-1].touch(table)
            elif line == "COMMIT":
                table = None
            elif line.startswith(":"):
                name, policy = line[1:].split()[:2]
                builders[-1].chain(_need(table), name, policy)
            elif line.startswith(("iptables ", "ip6tables ")):
                argv = shlex.split(line)
                if cmd_family and argv[0] != cmd_family:
                    builders.append(_Builder())
                cmd_family = argv[0]
                t, rest = _take_table(argv[1:])
                builders[-1].command(t, rest)
            else:
                builders[-1].command(_need(table), shlex.split(line))
        except (ParseError, ValueError, IndexError) as e:
            raise ParseError(f"line {lineno}: {raw!r}: {e}") from e
    return [b.build() for b in builders if not b.empty()]


def canonical_rule(args: list[str]) -> str:
    """Canonical text of one rule's match-and-target arguments (after `-A CHAIN`)."""
    basics: dict[str, tuple[bool, str]] = {}
    matches: list[tuple[str, list[str]]] = []
    target: tuple[str, list[str]] | None = None
    current: list[str] | None = None  # options of the match or target being read
    proto: str | None = None
    i, neg = 0, False
    while i < len(args):
        tok = args[i]
        if tok == "!":
            neg, i = True, i + 1
            continue
        tok = _BASIC_ALIASES.get(tok, tok)
        if tok in _BASIC_ORDER:
            value = "" if tok == "-f" else args[i + 1]
            i += 1 if tok == "-f" else 2
            basics[tok] = (neg, _basic_value(tok, value))
            if tok == "-p":
                proto = basics[tok][1]
            neg = False
            continue
        if tok in ("-m", "--match"):
            current = []
            matches.append((args[i + 1], current))
            i += 2
            continue
        if tok in ("-j", "--jump", "-g", "--goto"):
            kind = "-g" if tok in ("-g", "--goto") else "-j"
            current = []
            target = (f"{kind} {args[i + 1]}", current)
            i += 2
            continue
        if tok in ("-c", "--set-counters"):
            i += 3
            continue
        if not tok.startswith("-"):
            raise ParseError(f"unexpected token {tok!r}")
        values = []
        i += 1
        while i < len(args) and args[i] != "!" and not args[i].startswith("-"):
            values.append(args[i])
            i += 1
        if current is None:
            # An option before any -m: it belongs to the implicit match of -p.
            if proto is None:
                raise ParseError(f"option {tok} without a match module")
            current = []
            matches.append((proto, current))
        current.append(_option(tok, values, neg))
        neg = False
    if target is None:
        target = ("", [])
    return _render(basics, matches, target)


# -- internals ---------------------------------------------------------------------


class _Builder:
    """Replays -N/-A/-I/-P commands so the result is the final chain contents."""

    def __init__(self) -> None:
        self.chains: dict[str, dict[str, str]] = {}
        self.rules: dict[tuple[str, str], list[str]] = {}

    def touch(self, table: str) -> None:
        self.chains.setdefault(table, {})

    def empty(self) -> bool:
        return not self.chains and not self.rules

    def chain(self, table: str, name: str, policy: str) -> None:
        if name in BUILTIN_CHAINS.get(table, ()):
            if policy not in ("-", "ACCEPT"):
                self.chains.setdefault(table, {})[name] = policy
            else:
                self.chains.setdefault(table, {}).pop(name, None)
        else:
            self.chains.setdefault(table, {})[name] = "-"

    def command(self, table: str, argv: list[str]) -> None:
        op = argv[0]
        self.touch(table)
        if op in ("-N", "--new-chain"):
            self.chain(table, argv[1], "-")
        elif op in ("-P", "--policy"):
            self.chain(table, argv[1], argv[2])
        elif op in ("-A", "--append"):
            self.rules.setdefault((table, argv[1]), []).append(canonical_rule(argv[2:]))
        elif op in ("-I", "--insert"):
            rest = argv[2:]
            pos = 1
            if rest and rest[0].isdigit():
                pos, rest = int(rest[0]), rest[1:]
            chain = self.rules.setdefault((table, argv[1]), [])
            if pos > len(chain) + 1:
                raise ParseError(f"-I {argv[1]} {pos}: chain has only {len(chain)} rules")
            chain.insert(pos - 1, canonical_rule(rest))
        else:
            raise ParseError(f"unsupported command {op}")

    def build(self) -> Ruleset:
        tables = {t: dict(c) for t, c in self.chains.items()}
        rules = []
        for (table, chain) in sorted(self.rules):
            rules += [(table, chain, r) for r in self.rules[(table, chain)]]
        used = {t for t, _, _ in rules}
        tables = {t: c for t, c in tables.items() if c or t in used}
        return Ruleset(tables, rules)


def _need(table: str | None) -> str:
    if table is None:
        raise ParseError("rule outside a *table section")
    return table


def _take_table(argv: list[str]) -> tuple[str, list[str]]:
    if argv and argv[0] in ("-t", "--table"):
        return argv[1], argv[2:]
    return "filter", argv


def _basic_value(opt: str, value: str) -> str:
    if opt in ("-s", "-d"):
        return ",".join(str(ipaddress.ip_network(v, strict=False)) for v in value.split(","))
    if opt == "-p":
        value = value.lower()
        return _PROTO_NUMBERS.get(value, value)
    return value


def _mark(value: str, default_mask: int = FULL_MASK) -> str:
    v, _, m = value.partition("/")
    return f"0x{int(v, 0):x}/0x{int(m, 0) if m else default_mask:x}"


def _option(name: str, values: list[str], neg: bool) -> tuple[str, bool, tuple[str, ...]]:
    name = _OPTION_ALIASES.get(name, name)
    if name in _PORT_OPTIONS:
        values = [":".join(str(int(p)) if p.isdigit() else p for p in v.split(":"))
                  for v in values]
    elif name in _MARK_OPTIONS:
        values = [_mark(values[0])]
    elif name in _MASK_OPTIONS:
        values = [f"0x{int(values[0], 0):x}"]
    elif name == "--ctstate" or name == "--state":
        name = "--ctstate"
        values = [",".join(sorted(values[0].split(",")))]
    elif name in _ADDR_OPTIONS and values and "/" not in values[0] and ":" not in values[0]:
        values = [str(ipaddress.ip_address(values[0]))]
    return (name, neg, tuple(values))


def _canon_target(name: str, opts: list[tuple[str, bool, tuple[str, ...]]]) -> list:
    """Fold target spellings that load the same kernel target data."""
    d = {o[0]: o for o in opts}
    if name in ("-j MARK", "-j CONNMARK") and "--set-mark" in d:
        # --set-mark v/m is stored as --set-xmark v/(v|m) (libxt_MARK, libxt_CONNMARK).
        v, _, m = d.pop("--set-mark")[2][0].partition("/")
        val, mask = int(v, 0), int(m, 0) if m else FULL_MASK
        d["--set-xmark"] = ("--set-xmark", False, (f"0x{val:x}/0x{val | mask:x}",))
    if name == "-j CONNMARK" and ("--restore-mark" in d or "--save-mark" in d):
        # Unset masks are stored as 0xffffffff; --mask sets both (libxt_CONNMARK).
        mask = d.pop("--mask", None)
        default = mask[2][0] if mask else f"0x{FULL_MASK:x}"
        for opt in ("--nfmask", "--ctmask"):
            d.setdefault(opt, (opt, False, (default,)))
    if name == "-j TPROXY" and d.get("--on-ip", (None, None, ("",)))[2][0] == "0.0.0.0":
        d.pop("--on-ip")
    return sorted(d.values())


def _fmt_opts(opts) -> str:
    return " ".join(
        ("! " if neg else "") + " ".join((n, *vals)) for n, neg, vals in opts
    )


def _render(basics, matches, target) -> str:
    parts = [
        ("! " if basics[o][0] else "") + (o if o == "-f" else f"{o} {basics[o][1]}")
        for o in _BASIC_ORDER if o in basics
    ]
    rendered = []
    for module, opts in matches:
        if module in ("tcp", "udp") and not opts and basics.get("-p", (False, ""))[1] == module:
            continue  # `-p tcp -m tcp` with no tcp options is `-p tcp`
        rendered.append(f"-m {module} {_fmt_opts(sorted(opts))}".rstrip())
    parts += sorted(rendered)
    name, topts = target
    if name:
        parts.append(f"{name} {_fmt_opts(_canon_target(name, topts))}".rstrip())
    return " ".join(parts)
