"""`netlab promql`, `netlab port-forward` and `netlab graph`: what an operator looks at.

Thin: the lab's Prometheus client, the relay and the Kiali view live in netlab/telemetry/.
"""

from __future__ import annotations

import json
import sys
import time

import click

from netlab.cli.render import err, out
from netlab.errors import NetlabError
from netlab.kernel import query
from netlab.kernel.lifecycle import require_root
from netlab.telemetry.kiali.options import AMBIENT_TRAFFIC
from netlab.telemetry.kiali.versions import VERSIONS


def _write(text: str, out_file: str | None) -> None:
    if out_file:
        with open(out_file, "w", encoding="utf-8") as f:
            f.write(text)
        err().print(f"wrote {out_file}")
    else:
        sys.stdout.write(text)


@click.command("promql")
@click.argument("lab")
@click.argument("promql")
@click.option("--range", "range_", metavar="DURATION", help="A range query over the last DURATION (e.g. 5m).")
@click.option("--step", metavar="DURATION", help="Step of a range query (default: about 250 points).")
@click.option("--json", "as_json", is_flag=True, help="The Prometheus API's `data.result`, as JSON.")
def promql(lab: str, promql: str, range_: str | None, step: str | None, as_json: bool) -> None:
    """Run PROMQL against LAB's Prometheus (instant, or over --range)."""
    from netlab.telemetry.promclient import Prometheus, format_result, parse_duration, range_step

    require_root()
    prom = Prometheus.of_lab(lab)
    if range_:
        seconds = parse_duration(range_)
        end = time.time()
        result = prom.query_range(promql, end - seconds, end,
                                  parse_duration(step) if step else range_step(seconds))
    else:
        result = prom.query(promql)
    if as_json:
        out().print_json(json.dumps(result))
        return
    if not result:
        err().print("no series")
        return
    click.echo("\n".join(format_result(result)))


@click.command("port-forward")
@click.argument("lab")
@click.argument("target")
@click.argument("local_port", type=click.IntRange(0, 65535), required=False)
def port_forward(lab: str, target: str, local_port: int | None) -> None:
    """Open TARGET (`prometheus`) of LAB on the host's 127.0.0.1:LOCAL_PORT until Ctrl-C.

    LOCAL_PORT defaults to the target's own port; 0 picks a free one. As with `kubectl
    port-forward`, only the host's loopback listens, and nothing stays after the command.
    """
    from netlab.telemetry import portforward

    require_root()
    upstream = portforward.target(lab, target)
    sock = portforward.listen(upstream.port if local_port is None else local_port)
    port = sock.getsockname()[1]
    click.echo(f"Forwarding from 127.0.0.1:{port} -> {upstream.port}", nl=True)
    sys.stdout.flush()

    def handling() -> None:
        err().print(f"Handling connection for {port}", highlight=False)

    try:
        portforward.run(sock, upstream, handling)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a forward ends


@click.command("graph")
@click.argument("lab")
@click.option("--kiali", "version", type=click.Choice(VERSIONS), default="2.1", show_default=True,
              help="Which Kiali's queries and folding to run.")
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Namespaces to graph (default: all).")
@click.option("--security", is_flag=True, help="Kiali's Display → Security: the securityPolicy appender and locks.")
@click.option("--ambient", type=click.Choice(AMBIENT_TRAFFIC), default="total", show_default=True,
              help="Kiali's ambientTraffic option.")
@click.option("--duration", default="10m", show_default=True, help="The graph's time window.")
@click.option("--service-nodes/--no-service-nodes", default=True, show_default=True,
              help="Kiali's Display → Service Nodes (injectServiceNodes).")
@click.option("-o", "--output", "fmt", type=click.Choice(["json", "svg", "html"]), default="json",
              show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("--edge", nargs=2, metavar="SRC DST", help="One edge (workload names, or ns/name).")
@click.option("--metrics", is_flag=True, help="With --edge: the edge panel's TCP charts (range queries).")
@click.option("--topology", is_flag=True, help="The lab as built (nodes, pods by mesh mode, services), not Kiali's view.")
def graph(lab: str, version: str, namespaces: tuple[str, ...], security: bool, ambient: str, duration: str,
          service_nodes: bool, fmt: str, out_file: str | None, edge: tuple[str, str] | None, metrics: bool, topology: bool) -> None:
    """Kiali's traffic graph of LAB from its Prometheus, as Kiali VERSION builds it."""
    from netlab.telemetry import lab_graph, topology_view
    from netlab.telemetry.promclient import Prometheus, parse_duration

    record = query.record_of(lab)
    if topology:
        _write(topology_view.render(record, fmt), out_file)
        return
    if metrics and not edge:
        raise NetlabError("--metrics charts one edge: give it with --edge SRC DST")
    require_root()
    prom = Prometheus.of_lab(lab)
    lg = lab_graph.kiali_graph(prom, record, version, list(namespaces), security, ambient,
                               int(parse_duration(duration)), service_nodes)
    charts = None
    if edge and metrics:
        charts = lab_graph.edge_charts(prom, lg, *edge)
        if fmt != "html":
            click.echo("\n".join(lab_graph.charts_text(charts)))
            return
    elif edge:
        _write(json.dumps(lab_graph.edge(lg, *edge), indent=1) + "\n", out_file)
        return
    _write(lab_graph.render(lg, fmt, charts, f"{edge[0]} → {edge[1]}" if edge else ""), out_file)


COMMANDS: list[click.Command] = [promql, port_forward, graph]
