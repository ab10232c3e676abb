"""Device-link benchmark: python benchmarks/link.py [--json] [--quick]

Round-trip latency and throughput of the wire protocol (docs/protocol.md) over two real links:
- the emulated device (`edgesnn emulate MODEL --listen pty`, another process) over a pseudo-terminal;
- the application firmware on QEMU mps2-an386 (Cortex-M4) with its UART on TCP (qemu.Session(tcp=True)).
Both run the w2 preset (64 inputs, 256 recurrent LIF, 12 outputs) on Bernoulli input at 5 %.

Rows: ECHO of 16 bytes (the link alone); one STEP per request (the per-step round trip a closed-loop
application sees); batched STEP requests (as many steps as fit one request: throughput in steps/s and
input events/s); a model upload (bytes/s). Latencies are p50 / p99 over the repetitions.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _model(seed=0):
    from edgesnn.model import presets
    from edgesnn.model.quantize import quantize
    return quantize(presets.make("w2", seed=seed))


@contextmanager
def emulated_pty(model_path):
    proc = subprocess.Popen([sys.executable, "-m", "edgesnn", "emulate", str(model_path), "--listen", "pty"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@contextmanager
def qemu_tcp(model, work):
    from firmware_gen import build, export, qemu
    export.export_project(model, "qemu-mps2-an386", work)
    rep = build.build_project(work)
    with qemu.Session(rep["elf"], "qemu-mps2-an386", tcp=True) as s:
        yield s.url


def _pct(x):
    x = np.asarray(x) * 1e3
    return float(np.percentile(x, 50)), float(np.percentile(x, 99))


def measure(url, model, other, reps: int, steps: int) -> dict:
    from edgesnn.device import connect

    rng = np.random.default_rng(0)
    inputs = [np.flatnonzero(rng.random(64) < 0.05) for _ in range(steps)]
    out = {}
    with connect(url, timeout=30) as dev:
        info = dev.info
        echo = []
        for _ in range(reps):
            t0 = time.perf_counter()
            dev.echo(b"0123456789abcdef")
            echo.append(time.perf_counter() - t0)
        out["echo"] = _pct(echo)
        one = []
        for x in inputs[:reps]:
            t0 = time.perf_counter()
            dev.step(x)
            one.append(time.perf_counter() - t0)
        out["step"] = _pct(one)
        dev.reset()
        t0 = time.perf_counter()
        res = dev.run(inputs, spikes=True)
        wall = time.perf_counter() - t0
        n_ev = sum(len(x) for x in inputs)
        out["batched"] = {"steps_per_s": len(res) / wall, "events_per_s": n_ev / wall,
                          "steps_per_request": min(info.max_steps, len(inputs))}
        from firmware_gen.blob import pack
        blob = pack(other)
        t0 = time.perf_counter()
        dev.upload(other)
        up = time.perf_counter() - t0
        out["upload"] = {"bytes": len(blob), "bytes_per_s": len(blob) / up, "seconds": up}
        dev.upload(model)      # leave the device as found
        out["device"] = info.name
        out["max_payload"] = info.max_payload
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke test)")
    args = ap.parse_args(argv)
    from edgesnn.model import modelfile

    reps, steps = (20, 200) if args.quick else (300, 3000)
    model, other = _model(0), _model(1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="esnn-link-") as d:
        path = Path(d) / "w2.esnn"
        modelfile.save(model, path)
        say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
        say("emulated device over a pty ...")
        with emulated_pty(path) as url:
            results["emulated_pty"] = measure(url, model, other, reps, steps)
        say("application firmware on QEMU mps2-an386, UART on TCP ...")
        with qemu_tcp(model, Path(d) / "fw") as url:
            results["qemu_tcp"] = measure(url, model, other, reps, steps)
    results["load_average_1min"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results))
        return 0
    head = (f"{'link':<14} {'echo p50/p99 ms':>16} {'step p50/p99 ms':>16} {'steps/s':>9} {'events/s':>9} "
            f"{'steps/req':>9} {'upload KB/s':>11}")
    print(head)
    for name in ("emulated_pty", "qemu_tcp"):
        r = results[name]
        print(f"{name:<14} {r['echo'][0]:>7.3f}/{r['echo'][1]:<8.3f} {r['step'][0]:>7.3f}/{r['step'][1]:<8.3f} "
              f"{r['batched']['steps_per_s']:>9,.0f} {r['batched']['events_per_s']:>9,.0f} "
              f"{r['batched']['steps_per_request']:>9} {r['upload']['bytes_per_s'] / 1e3:>11,.0f}")
    print(f"w2 at 5 % input; upload of a {results['qemu_tcp']['upload']['bytes']:,}-byte blob; "
          f"1-min load average {results['load_average_1min']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
