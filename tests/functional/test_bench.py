"""make bench still runs: tools/bench.py on the test stack, with the smallest images and one
round of (a) to (d) and (f) on the small image, in about half a minute. (e) starts three more
workers, (g) needs the three Cinder backends of the stack that make bench starts, (h) the
newest Nova's venv, and (i) waits twice more for the pool's statistics to settle: what they use
is checked by tests/unit/test_bench.py. No time is asserted: performance claims live in the
benchmark's results."""

import json
import subprocess
import sys

from tests.functional.conftest import TOP

SMALLEST = ["--runs", "1", "--sizes", "small", "--small-data-mib", "1",
            "--virtual-gib", "0.0625", "--data-mib", "4", "--zeros-mib", "1"]


def test_the_bench_measures_the_small_image_once(stack, tmp_path):
    done = subprocess.run(
        [sys.executable, str(TOP / "tools" / "bench.py"), *SMALLEST, "--skip-concurrency",
         "--skip-volumes", "--skip-roots", "--skip-identical", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=str(TOP))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    small = result["sizes"]["small"]
    assert {"original", "direct", "read_floor", "cacheraw", "recache", "status",
            "clone"} <= set(small["seconds"])
    assert {"concurrency", "volumes", "roots", "identical"}.isdisjoint(result)
