"""Labs: a topology, traffic, expectations over observed evidence, and named variants.

A lab is a specification (pwru's "CI as a spec"): each variant builds its own lab
instance, drives a real client, collects what the kernel shows, and judges only that.
`netlab lab list|run|explain` is the CLI; `registry` knows the labs.
"""
