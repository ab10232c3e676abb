"""Fuzzing the device link: python benchmarks/fuzz_link.py [--seconds 120] [--jobs 1] [--json] [--keep DIR]

libFuzzer with ASan and UBSan on esnn_link_feed (firmware_gen/fuzz/link_fuzz.c: the kws preset compiled
in, upload enabled, raw byte streams and structured records whose frames carry correct checks, mutated
weight blobs uploaded with their CRCs fixed up), starting from seeds of every message type
(firmware_gen.hostdevice.seed_inputs). Prints executions per second, runs, coverage (libFuzzer's cov:
edges, ft: features), the corpus size and the time; exits 1 on a crash or a sanitizer report (the
reproducer is written next to the corpus, crash-*).

Needs clang and libclang-rt-14-dev (.ci/setup-toolchain.sh). tests/test_device_firmware.py runs the same
target for a few seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=120, help="fuzzing time (default 120)")
    ap.add_argument("--runs", type=int, default=None, help="stop after this many inputs instead")
    ap.add_argument("--keep", default=None, help="corpus directory to keep (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from firmware_gen import hostdevice as H

    exe = H.build_fuzzer()
    with tempfile.TemporaryDirectory(prefix="esnn-fuzz-") as tmp:
        corpus = Path(args.keep) if args.keep else Path(tmp) / "corpus"
        H.write_seeds(corpus)
        seeds = len(H.seed_inputs())
        res = H.run_fuzzer(exe, corpus, runs=args.runs, max_total_time=None if args.runs else args.seconds,
                           timeout=(args.seconds if not args.runs else 3600) + 300,
                           extra=[f"-artifact_prefix={corpus.parent}/"])
        res["corpus_files"] = sum(1 for _ in corpus.iterdir())
    res["seeds"] = seeds
    res["target"] = "firmware_gen/fuzz/link_fuzz.c (esnn_link.c + edgesnn.c, kws preset, ASan + UBSan)"
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "log_tail"}, indent=2))
    else:
        print(f"target      {res['target']}")
        print(f"time        {res['seconds']:.1f} s")
        print(f"runs        {res.get('runs', 0):,}")
        print(f"exec/s      {res.get('execs_per_s', 0):,}")
        print(f"coverage    cov {res.get('cov', 0)}  ft {res.get('ft', 0)}")
        print(f"corpus      {res['corpus_files']} inputs (from {seeds} seeds)")
        print(f"result      {'clean' if res['returncode'] == 0 else 'FAILED (crash or sanitizer report)'}")
    if res["returncode"] != 0:
        print(res["log_tail"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
