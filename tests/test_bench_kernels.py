"""The kernel benchmark runs and reports well-formed figures (no timing is asserted)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from edgesnn.bench.kernels import VARIANTS, format_table, run

WORKLOADS = ("W1", "W2", "W3")


def _check(results):
    for w in WORKLOADS:
        assert set(results[w]) == set(VARIANTS)
        for v in VARIANTS:
            fig = results[w][v]
            assert set(fig) == {"steps_per_s", "synops_per_s", "ratio"}
            for value in fig.values():
                assert isinstance(value, float) and math.isfinite(value) and value > 0, (w, v, fig)
        assert results[w]["numpy_ref"]["ratio"] == pytest.approx(1.0)
        # every variant of a workload is credited with the same synaptic operations per step
        per_step = {results[w][v]["synops_per_s"] / results[w][v]["steps_per_s"] for v in VARIANTS}
        assert max(per_step) == pytest.approx(min(per_step))
        assert results["workloads"][w]["synops"] > 0
    assert results["workloads"]["W3"]["batch"] == 64
    frac = results["limit"]["W1_fixed_fused_fraction"]
    assert math.isfinite(frac) and frac > 0
    assert results["machine"]["numba"]


def test_quick_run_structure():
    messages = []
    results = run(quick=True, progress=messages.append)
    _check(results)
    assert messages and all(isinstance(m, str) for m in messages)
    table = format_table(results)
    for w in WORKLOADS:
        assert w in table
    for v in VARIANTS:
        assert v in table


def test_script_prints_one_json_object():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "kernels.py"
    out = subprocess.run([sys.executable, str(script), "--json", "--quick"], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    _check(json.loads(out))  # json.loads refuses anything but exactly one JSON value
