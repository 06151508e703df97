# loopcore: `make demo` runs the main job on a built-in example image,
# `make test` runs every test: lint and types, host tests, then
# device-mapper tests in a VM.  Every target bootstraps what it needs and
# calls tools by their path in .venv (nothing beyond Debian's default PATH).
PY := .venv/bin/python

.PHONY: demo test lint test-host test-vm wheel bench clean

demo:
	scripts/bootstrap
	$(PY) scripts/demo.py

test:
	scripts/bootstrap --vm
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-host
	$(MAKE) --no-print-directory test-vm

lint:
	.venv/bin/ruff check src tests scripts benchmarks
	.venv/bin/mypy

test-host:
	@[ "$$(id -u)" = 0 ] && [ -e /dev/loop-control ] || \
		{ echo "make test needs root and /dev/loop-control (real loop devices)" >&2; exit 1; }
	$(PY) -m pytest tests --ignore=tests/vm -p no:cacheprovider

test-vm:
	scripts/vm-tests

wheel:
	scripts/build-wheel

bench:
	scripts/bootstrap
	$(PY) -m benchmarks

clean:
	rm -rf build dist wheelhouse src/*.egg-info src/loopcore/_native.c src/loopcore/_native*.so .pytest_cache .mypy_cache .ruff_cache
