# cacheraw: every command a developer or CI needs. See docs/development.md.
VENV ?= .venv
PY := $(VENV)/bin/python
STACK := tools/stack/stack.py

.PHONY: setup stack-up stack-down stack-status run test unit functional genconfig bench clean
.PHONY: test-faults test-hostile test-nova dist lint typecheck compat

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

# The whole suite on the main Python, and the unit suite on Python 3.9, 3.10 and 3.12; half the
# functional suites on a second stack at the same time (tools/run-tests.sh --split).
test: setup
	@tools/run-tests.sh --pythons --split tests

unit: setup
	$(PY) -m pytest tests/unit

# ruff.toml's rules; tests/unit/test_lint.py runs the same in make test.
lint: setup
	$(PY) -m ruff check cacheraw tests tools bench setup.py

# mypy.ini's packages and modules, checked for Python 3.9; tests/unit/test_types.py runs the same
# in make test.
typecheck: setup
	$(PY) -m mypy --config-file mypy.ini

functional: setup
	@tools/run-tests.sh tests/functional

test-faults: setup
	@tools/run-tests.sh -m faults tests

test-hostile: setup
	@tools/run-tests.sh -m hostile tests

# The driver's unit tests against the real RBDDriver of each Cinder release it supports
# (tools/cinder-releases.txt): not part of `make test` (a few minutes the first time).
compat: setup
	@tools/compat.sh

# The Nova driver against real Nova 27 and the newest Nova (each venv made once by
# tools/nova-venv.sh); part of make test too.
test-nova: setup
	@tools/run-tests.sh tests/functional/test_nova.py

# The sample configuration and the option reference of docs/configuration.md.
genconfig: setup
	$(VENV)/bin/oslo-config-generator --config-file etc/oslo-config-generator/cacheraw.conf
	$(PY) tools/gen-config-doc.py

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
