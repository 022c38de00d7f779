"""`benchmarks/gpu_check.py --smoke`: the GPU device check runs end to end on CPU with the tiny model, so
the script cannot rot between the sessions that have a GPU to run it on."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("composer")


@pytest.mark.slow  # the slow tier (`make test-all`; the README says what each slow test protects)
def test_the_device_check_runs_its_loader_and_synthetic_runs_on_cpu(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--no-compile", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"loader", "synthetic"}
    for run in result["runs"].values():
        assert run["tokens_per_s"] > 0 and run["flops_per_s"] > 0  # SpeedMonitor's, after the skipped steps
        assert run["mfu"] is None and run["peak_mem_gib"] is None  # a CPU has no known peak: nothing made up
    assert math.isfinite(result["loader_overhead"])
    assert "loader overhead (eager)" in proc.stdout
