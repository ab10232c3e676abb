"""Pipeline benchmark: python benchmarks/pipeline.py [--json] [--quick] [--audio]

1. file, as fast as it goes: the 19 s DVS Gesture stream (data/dvs_gesture/stream_10_gestures.aedat4, 1.2 M
   real events) read with dv-processing, fitted to 2x32x32, binned into 1 ms steps and run through the
   demo's gesture network in the fixed-point emulator on one core (decoding and binning included);
2. network, real-time pace: the same stream served by `edgesnn replay` (a dv-processing NetworkWriter in a
   child process) and read with a NetworkReader: per-step latency p50 / p99 and dropped events at dt = 1 ms;
3. (--audio, when edgesnn.streams.audio exists) the audio front-end's throughput in samples/s.
--quick uses the 1.45 s recording 1.aedat4 instead of the 19 s stream.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def bench_file(model, path, origin):
    from edgesnn.simulator import Simulator
    from edgesnn.streams.runner import StreamRunner
    from edgesnn.streams.sources import AedatSource
    from edgesnn.streams.transforms import InputMap

    best = None
    for _ in range(3):
        src = AedatSource(path)
        r = StreamRunner(Simulator.fixed(model), InputMap(src.resolution, (2, 32, 32)), 1e-3, origin_us=origin)
        m = r.run(src)
        if best is None or m.wall_s < best.wall_s:
            best = m
    return best


def bench_network(model, path, origin):
    from edgesnn.simulator import Simulator
    from edgesnn.streams import demo
    from edgesnn.streams.runner import StreamRunner
    from edgesnn.streams.sources import NetworkSource
    from edgesnn.streams.transforms import InputMap

    port = demo.free_port()
    proc = demo.start_replay(path, port, fast=False)
    try:
        src = NetworkSource("127.0.0.1", port, idle_timeout=1.0)
        r = StreamRunner(Simulator.fixed(model), InputMap(src.resolution, (2, 32, 32)), 1e-3, live=True,
                         origin_us=origin)
        m = r.run(src)
        src.close()
    finally:
        proc.wait(timeout=30)
    return m


def bench_audio(quick):
    try:
        from edgesnn.streams import audio
    except ImportError:
        return None
    return audio.benchmark(seconds=2.0 if quick else 10.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark the streaming pipeline on real DVS Gesture events.")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--quick", action="store_true", help="the 1.45 s recording instead of the 19 s stream")
    ap.add_argument("--no-network", action="store_true", help="skip the real-time network run")
    args = ap.parse_args(argv)

    from edgesnn.streams import demo

    d = demo.data_dir()
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    log("training the demo's gesture network ...")
    model, _ = demo.train(d)
    path, origin = (d / "1.aedat4", None) if args.quick else (d / "stream_10_gestures.aedat4", demo.STREAM_ORIGIN_US)
    log(f"file, as fast as it goes: {path.name} ...")
    mf = bench_file(model, path, origin)
    res = {"file": mf.as_dict()}
    if not args.no_network:
        log(f"network stream at real-time pace: {path.name} over loopback ...")
        res["network"] = bench_network(model, path, origin).as_dict()
    a = bench_audio(args.quick)
    if a is not None:
        res["audio"] = a
    res["cpu_count"] = os.cpu_count()
    res["load_avg_1min"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(res))
        return 0
    rows = [("run", "events", "steps", "stream s", "wall s", "x real time", "M ev/s", "p50 ms", "p99 ms",
             "dropped ev", "late ev")]
    for name, key in (("file (fast)", "file"), ("network (real time)", "network")):
        if key in res:
            m = res[key]
            rows.append((name, str(m["events"]), str(m["steps"]), f"{m['stream_s']:.2f}", f"{m['wall_s']:.2f}",
                         f"{m['realtime_factor']:.1f}", f"{m['events_per_s'] / 1e6:.2f}",
                         f"{m['latency_p50_ms']:.3f}", f"{m['latency_p99_ms']:.3f}", str(m["dropped_events"]),
                         str(m["late_events"])))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w[i]) for i, c in enumerate(r)))
    if "audio" in res:
        a = res["audio"]
        print(f"audio front-end: {a['channels']} channels at {a['rate']} Hz: {a['samples_per_s'] / 1e6:.2f} M samples/s "
              f"({a['realtime_factor']:.0f}x real time)")
    print(f"(one process, {res['cpu_count']} cores, 1-min load average {res['load_avg_1min']:.1f} when done)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
