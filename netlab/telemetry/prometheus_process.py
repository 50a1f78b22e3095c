"""`python -m netlab.telemetry.prometheus_process`: Debian's Prometheus, started the netlab way.

Prometheus is a foreign command: it cannot write netlab's ready pipe, and it listens on
its port well before it can answer queries (the TSDB opens after the listener). So this
small launcher runs it as a child in the same namespace and says ready only once
`/-/ready` answers 200 (the readiness probe of Istio's sample deployment) *and* every
target of the config has been scraped once: Prometheus hands discovered targets to its
scrapers in batches every 5 seconds, so a lab that sent traffic right after `up` would
otherwise see its first connections already counted in the first sample, and Kiali's
`rate(...) > 0` would never see them. A missing binary is one plain line in the lab's
log (which `up` shows) instead of a traceback.

It stays Prometheus' parent: SIGTERM or SIGINT is passed on and the launcher exits when
Prometheus does, so the lab's teardown (which signals the whole process group) and its
supervisor see one unit.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import time

from netlab import readiness

READY_TIMEOUT = 60.0  # an empty TSDB opens in well under a second; this is for a loaded machine


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def _target_count(config_path: str) -> int:
    with open(config_path) as f:
        cfg = json.load(f)  # the addon writes JSON (a YAML subset)
    return sum(len(sc.get("targets", [])) for job in cfg.get("scrape_configs", [])
               for sc in job.get("static_configs", []))


def _ready(port: int, targets: int) -> bool:
    """/-/ready is 200 and `up` has a sample for every target."""
    if _get(port, "/-/ready")[0] != 200:
        return False
    if targets == 0:
        return True
    status, body = _get(port, "/api/v1/query?query=count(up)")
    try:
        result = json.loads(body)["data"]["result"] if status == 200 else []
    except (ValueError, KeyError):
        return False
    return bool(result) and int(float(result[0]["value"][1])) >= targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netlab.telemetry.prometheus_process")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--storage", required=True)
    ap.add_argument("--listen", required=True, help="ip:port for --web.listen-address")
    ap.add_argument("--no-wait-for-targets", dest="wait_for_targets", action="store_false",
                    help="ready once /-/ready answers, before the first scrapes (spec.prometheus.waitForTargets)")
    ap.add_argument("extra", nargs="*", help="after --: more flags for Prometheus (a pod's args:)")
    args = ap.parse_args(argv)
    if not os.access(args.binary, os.X_OK):
        print(f"prometheus: {args.binary} is not installed; install Debian's package "
              "`prometheus` (apt-get install -y prometheus, or scripts/setup.sh)", flush=True)
        return 1
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.makedirs(args.storage, exist_ok=True)
    child = subprocess.Popen([args.binary, f"--config.file={args.config}",
                              f"--storage.tsdb.path={args.storage}",
                              f"--web.listen-address={args.listen}", *args.extra],
                             stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr)
    port = int(args.listen.rsplit(":", 1)[1])
    targets = _target_count(args.config) if args.wait_for_targets else 0
    deadline = time.monotonic() + READY_TIMEOUT
    delay = 0.02
    while not _ready(port, targets):
        if child.poll() is not None:
            print(f"prometheus exited with {child.returncode} before it was ready", flush=True)
            return 1
        if stop["signal"] or time.monotonic() > deadline:
            if not stop["signal"]:
                print(f"prometheus was not ready (/-/ready, then a first scrape of {targets} targets) "
                      f"within {READY_TIMEOUT:g}s", flush=True)
            child.terminate()
            child.wait()
            return 1
        time.sleep(delay)  # polling a condition (/-/ready), with a deadline
        delay = min(delay * 2, 0.2)
    print(f"prometheus ready on {args.listen} (pid {child.pid}), {targets} targets scraped", flush=True)
    readiness.announce()
    while child.poll() is None:
        if stop["signal"]:
            child.send_signal(stop["signal"])
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            break
        try:
            child.wait(timeout=0.5)  # wakes at once when Prometheus exits
        except subprocess.TimeoutExpired:
            pass
    return 0 if stop["signal"] else (child.returncode or 1)


if __name__ == "__main__":
    sys.exit(main())
