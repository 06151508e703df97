# loopcore: `make demo` runs the main job on a built-in example image,
# `make test` runs every test: lint and types, host tests, then
# device-mapper tests in a VM.  Every target bootstraps what it needs and
# calls tools by their path in .venv (nothing beyond Debian's default PATH).
PY := .venv/bin/python

.PHONY: demo test lint test-host test-vm props-long fuzz soak wheel bench clean

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

# The property tests (tests/test_properties_*.py) with 50 times the examples
# `make test` runs (hypothesis's long profile: some 20 minutes on an idle
# 2-CPU machine, about an hour on a busy one).
props-long:
	scripts/bootstrap
	LOOPCORE_PROPERTIES=long $(PY) -m pytest tests/test_properties_*.py -p no:cacheprovider -q

# The coverage-guided fuzzer over the three byte parsers, FUZZ_MINUTES each.
FUZZ_MINUTES ?= 10
fuzz:
	scripts/fuzz -m $(FUZZ_MINUTES)

# The soak's long form (tests/test_soak.py is its 60-second form): 4 worker
# processes for 10 minutes, kill -9 of random ones, invariants between rounds.
soak:
	scripts/bootstrap
	benchmarks/soak --procs 4 --minutes 10

wheel:
	scripts/build-wheel

bench:
	scripts/bootstrap
	$(PY) -m benchmarks

clean:
	rm -rf build dist wheelhouse src/*.egg-info src/loopcore/_native.c src/loopcore/_native*.so .pytest_cache .mypy_cache .ruff_cache
