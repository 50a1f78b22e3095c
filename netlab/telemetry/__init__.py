"""Evidence an operator reads: Kiali's view of the lab's telemetry.

This layer sits above observe and below labs (docs/architecture.md). It is pure:
it builds PromQL strings and turns Prometheus API results into graphs and
pictures. Running Prometheus and printing to a terminal belong to the callers.
"""
