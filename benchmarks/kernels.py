"""Kernel benchmark: python benchmarks/kernels.py [--json] [--quick]  (see edgesnn/bench/kernels.py)."""
import os

# The numpy reference runs on one BLAS thread: set before numpy is first imported (edgesnn.bench.kernels
# also limits OpenBLAS at run time, through threadpoolctl when installed).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark the emulator kernels against a numpy reference.")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke test, not a measurement)")
    args = ap.parse_args(argv)

    from edgesnn.bench.kernels import format_table, run

    progress = None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    results = run(quick=args.quick, progress=progress)
    print(json.dumps(results) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
