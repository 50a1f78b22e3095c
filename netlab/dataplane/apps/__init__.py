"""Built-in workload images: tiny asyncio servers that stand in for the pods' apps.

Run one with `python -m netlab.dataplane.apps <image> [options]`. A lab may start
dozens of these, so each image imports only what it needs, and only after the
command line has chosen it (see __main__). Documented in docs/apps.md.
"""
