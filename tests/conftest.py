import importlib.util
import os

# tests/nova/ runs real Nova code, in the virtual environments of tools/nova-venv.sh (one per
# Nova release), which tests/functional/test_nova.py makes and runs it in; the project's own
# environment has no Nova.
collect_ignore = [] if importlib.util.find_spec("nova") else ["nova"]


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
