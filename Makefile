# cacheraw: every command a developer or CI needs. See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
STACK := tools/stack/stack.py

.PHONY: setup stack-up stack-down stack-status run test unit functional genconfig bench clean
.PHONY: test-faults test-hostile test-nova dist

setup:
	@tools/setup.sh

stack-up: setup
	@$(PY) $(STACK) up

# stack.py down and status need nothing but the standard library.
stack-down:
	@python3 $(STACK) down

stack-status:
	@python3 $(STACK) status

run: stack-up
	$(VENV)/bin/cacheraw-worker --config-file .stack/cacheraw.conf

test: setup
	@tools/run-tests.sh tests

unit: setup
	$(PY) -m pytest tests/unit

functional: setup
	@tools/run-tests.sh tests/functional

test-faults: setup
	@tools/run-tests.sh -m faults tests

test-hostile: setup
	@tools/run-tests.sh -m hostile tests

# The Nova driver against real Nova 27 and the newest Nova (each venv made once by
# tools/nova-venv.sh); part of make test too.
test-nova: setup
	@tools/run-tests.sh tests/functional/test_nova.py

genconfig: setup
	$(VENV)/bin/oslo-config-generator --config-file etc/oslo-config-generator/cacheraw.conf

# The sdist and, built from it, the wheel that tools/install.sh installs on a controller; the
# wheel of the Nova shim (nova-shim/) that it installs on compute hosts beside it.
dist: setup
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m build --wheel --outdir dist nova-shim

bench: setup
	@tools/run-tests.sh --bench

clean:
	-python3 $(STACK) down
	rm -rf .stack
