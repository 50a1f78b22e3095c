# The two commands the README promises. Each runs the (idempotent) set-up first.
PY := .venv/bin/python
PYTEST := .venv/bin/pytest

.PHONY: setup demo test test-unit test-kernel bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(PYTEST) -q -p no:cacheprovider tests

test-unit: setup
	$(PYTEST) -q -p no:cacheprovider -m "not kernel" tests

test-kernel: setup
	$(PYTEST) -q -p no:cacheprovider -m kernel tests

bench: setup
	.venv/bin/netlab bench topology --nodes 4 --pods 200 --vs-mininet

clean:
	-.venv/bin/netlab clean
