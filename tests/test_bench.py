"""bench/run.py, the side-by-side benchmark, as a smoke test: one short round of each scenario
runs and reports the shape the README's table is made from (the numbers themselves are the
benchmark's to judge, never a test's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import HERE, needs, needs_root

# The benchmark compares the two backends side by side: it needs both.
pytestmark = [needs_root, needs("backend:ns", "backend:trace")]
RUN = os.path.join(os.path.dirname(HERE), "bench", "run.py")


def test_one_round_of_each_scenario_reports_hyjail_beside_native():
    result = subprocess.run([sys.executable, RUN, "--rounds", "1", "--scale", "1,3",
                             "--scenarios", "start,enter,inside,scale", "--json", "--quick"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"hyjail ns --net none", "hyjail ns veth", "hyjail trace", "chroot",
            "python floor"} <= set(report["start"])
    assert {"hyjail jexec", "hyjail exec"} <= set(report["enter"])
    assert all(row["median_ms"] > 0 for row in report["enter"].values())
    assert set(report["inside"]) == {"find", "fork loop", "stat loop", "bind/connect"}
    for workload in report["inside"].values():
        assert workload["native"]["x_native"] == 1.0
        assert workload["hyjail trace"]["median_ms"] > 0
    assert [row["started"] for row in report["scale"].values()] == [1, 3]
