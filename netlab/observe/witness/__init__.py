"""Witnesses: the kernel's own account of what happened, read back for a lab to judge.

A witness reads state (iptables-save, sysctls, SNMP counters, listening sockets, copies
of packets on a link) instead of trusting what a process says it did, and hands back
plain JSON-able data. `match` finds expected events in an event stream by example.
Labs, tests and the command line share these; none of them knows a lab.
"""
