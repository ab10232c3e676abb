"""The stream verbs of the command line: `edgesnn run`, `edgesnn replay`, `edgesnn demo`.

Registered by edgesnn/cli.py with ``add_verbs(sub)``; heavy imports happen inside each verb."""
from __future__ import annotations

import json
import math

from ..errors import InputError


def cmd_replay(args):
    from .replay import main_replay

    main_replay(args.file, args.listen, args.speed, args.loop, quiet=args.quiet, linger=args.linger)


def cmd_demo(args):
    from .demo import run_demo

    run_demo(fast=args.fast, as_json=args.json, save_model=args.save_model)


def _simulator(args, model):
    """The emulator, or with --device the board behind the link (the model uploaded when it runs another)."""
    import sys

    from ..simulator import Simulator

    if not args.device:
        return Simulator.fixed(model), None
    from ..device import connect
    from ..device.remote import RemoteSimulator

    dev = connect(args.device)
    try:
        return RemoteSimulator(dev, model, say=lambda msg: print(msg, file=sys.stderr, flush=True)), dev
    except BaseException:
        dev.close()
        raise


def cmd_run(args):
    from ..model import modelfile

    model = modelfile.load(args.model)
    sim, dev = _simulator(args, model)
    try:
        return _run(args, model, sim)
    finally:
        if dev is not None:
            dev.close()


def _run(args, model, sim):
    from .runner import StreamRunner, WindowDecider, warm_up
    from .sources import AudioSource, open_source
    from .transforms import DvFilter, InputMap, Refractory

    net = model.network
    warm_up(sim)   # compile before connecting: a live source starts sending at once
    src = open_source(args.source, pcm_rate=args.rate, idle_timeout=args.idle_timeout)
    if isinstance(src, AudioSource):
        if args.realtime:
            src.live = True
        return run_audio(args, model, src, sim)
    imap = InputMap(src.resolution, net.input_shape)
    transforms = []
    if args.noise_filter:
        transforms.append(DvFilter.background_activity(src.resolution, args.noise_filter))
    if args.refractory_us:
        transforms.append(Refractory(src.resolution, args.refractory_us))
    last = net.layers[-1].neuron
    q = model.layers[-1]
    mode = "count" if last.spiking else ("delta" if math.isinf(last.tau_mem) else "membrane")
    window = max(1, int(round(args.window * 1e-3 / net.dt)))

    def on_det(det):
        if args.json:
            print(json.dumps(det.as_dict()), flush=True)
        else:
            print(f"t {det.t:8.3f} s  class {det.label:3d}  confidence {det.confidence:.2f}  "
                  f"({det.events} events)", flush=True)

    dec = WindowDecider(window, net.dt, mode=mode, min_events=args.min_events, shift=q.shift,
                        temperature=args.temperature, callback=on_det)
    if not args.json:
        print(f"{src.name}: {imap.describe()}; model {args.model} ({net.name}), dt {net.dt * 1e3:g} ms, "
              f"decisions every {window} steps ({mode} decoder)", flush=True)
    runner = StreamRunner(sim, imap, net.dt, transforms, live=src.live, pace=args.realtime,
                          max_lag=args.max_lag * 1e-3, close_after=args.close_after * 1e-3)
    m = runner.run(src, on_chunk=dec, max_steps=args.max_steps)
    if args.json:
        d = m.as_dict()
        d["decisions"] = len(dec.detections)
        print(json.dumps(d), flush=True)
    else:
        print(f"{len(dec.detections)} decisions\n" + m.format())


def audio_encoder(model_path, net, rate: int):
    """(front-end, block -> Events, description) for an audio model: the level code and delay line of the
    reader it was trained with (MODEL.data.json of `edgesnn train` on fsdd:, edgesnn.data.LevelCode,
    block by block exactly as the reader encodes a whole recording), else delta spikes, ON then OFF per
    band (docs/audio.md)."""
    from pathlib import Path

    from ..data import LevelCode
    from ..frontends.encoders import events_from_raster
    from ..simulator import Events
    from .audio import AudioFrontend

    side = Path(str(model_path) + ".data.json")
    o = json.loads(side.read_text()) if side.is_file() else {}
    opts = o.get("options", {}) if o.get("reader") == "fsdd" else {}
    if opts.get("encode", "delta") == "level":
        delays = [int(d) for d in str(opts.get("delays", "0")).split(",")]
        peak = ((int(opts["peak_range"]), int(opts["peak_release"]), int(opts["gate"]))
                if opts.get("norm") == "peak" else None)
        ch = int(opts["channels"])
        code = LevelCode(ch, int(opts["level_shift"]), int(opts["floor"]), delays, peak)
        if net.n_inputs != code.n_inputs or not math.isclose(float(opts["hop_ms"]) * 1e-3, net.dt):
            raise InputError(f"{side} describes {code.n_inputs} inputs every {opts['hop_ms']} ms, but the model "
                             f"takes {net.n_inputs} every {net.dt * 1e3:g} ms")
        fe = AudioFrontend(rate, ch, hop_ms=float(opts["hop_ms"]), env_shift=int(opts.get("env_shift", 5)))
        return (fe, lambda block: Events.from_dense(code.delay(code.levels(fe.process(block)))),
                f"{ch} bands, level code ({'running peak' if peak else 'fixed floor'}), delays {delays}")
    if len(net.input_shape) != 1 or net.n_inputs % 2:
        raise InputError(f"an audio model takes (2 * bands,) inputs (ON then OFF per band), or the level code "
                         f"its MODEL.data.json describes; this model takes {net.input_shape}")
    fe = AudioFrontend(rate, net.n_inputs // 2, hop_ms=net.dt * 1e3)
    return fe, lambda block: events_from_raster(fe.raster(block)), f"{fe.n} bands x ON/OFF"


def run_audio(args, model, src, sim):
    """Audio source -> integer front-end (docs/audio.md) -> spikes -> emulator -> decisions."""
    import time

    import numpy as np

    from .audio import AudioFrontend
    from .runner import LatencyHistogram, Metrics, WindowDecider, count_spikes

    net = model.network
    fe, encode, what = audio_encoder(args.model, net, src.rate)
    last = net.layers[-1].neuron
    mode = "count" if last.spiking else ("delta" if math.isinf(last.tau_mem) else "membrane")
    window = max(1, int(round(args.window * 1e-3 / net.dt)))

    def on_det(det):
        print(json.dumps(det.as_dict()) if args.json else
              f"t {det.t:8.3f} s  class {det.label:3d}  confidence {det.confidence:.2f}  ({det.events} spikes in)",
              flush=True)

    dec = WindowDecider(window, net.dt, mode=mode, min_events=args.min_events, shift=model.layers[-1].shift,
                        temperature=args.temperature, callback=on_det)
    if not args.json:
        print(f"{src.name}: {src.rate} Hz audio -> {what} every {fe.hop} samples; model "
              f"{args.model} ({net.name})", flush=True)
    AudioFrontend(src.rate, fe.n, hop_ms=net.dt * 1e3).raster(np.zeros(2 * fe.hop, np.int16))  # compile first
    m, hist = Metrics(source=src.name), LatencyHistogram()
    spikes = np.zeros(sim.program.n_layers, np.int64)
    step, samples = 0, 0
    start = time.perf_counter()
    for block in src.blocks():
        arrival = time.perf_counter()
        samples += block.size
        ev = encode(block)
        if ev.n_steps == 0:
            continue
        rec = sim.run(ev, record="spikes")
        hist.add(time.perf_counter() - arrival, ev.n_steps)
        count_spikes(sim, rec, spikes)
        dec(step, rec, ev)
        step += ev.n_steps
        m.events_in += ev.idx.size
        if args.max_steps is not None and step >= args.max_steps:
            break
    m.wall_s = time.perf_counter() - start
    m.events, m.steps, m.stream_s = samples, step, samples / src.rate
    m.events_per_s = samples / m.wall_s if m.wall_s else 0.0
    m.realtime_factor = m.stream_s / m.wall_s if m.wall_s else 0.0
    m.latency_p50_ms, m.latency_p99_ms = hist.percentile(50) * 1e3, hist.percentile(99) * 1e3
    m.latency_max_ms = hist.max * 1e3
    m.spikes_per_layer = [int(x) if x >= 0 else None for x in spikes]
    if args.json:
        d = m.as_dict()
        d["decisions"] = len(dec.detections)
        d["samples"] = samples
        print(json.dumps(d), flush=True)
    else:
        print(f"{len(dec.detections)} decisions; {samples} samples ('events' below), {m.events_in} input spikes\n"
              + m.format())


def add_verbs(sub) -> None:
    r = sub.add_parser("run", help="run a model on a live or recorded event stream; print decisions")
    r.add_argument("--source", required=True, metavar="SRC",
                   help="FILE.aedat4, FILE.bs2, tcp://HOST:PORT (dv-processing stream), camera, camera:SERIAL; "
                        "audio: FILE.wav, pcm:- (raw S16LE mono on stdin), mic (optional sounddevice)")
    r.add_argument("--rate", type=int, default=16000, help="sample rate of pcm:- and mic (default 16000)")
    r.add_argument("--model", required=True, metavar="MODEL", help="model file (.esnn)")
    r.add_argument("--window", type=float, default=150.0, help="decision window in ms (default 150)")
    r.add_argument("--min-events", type=int, default=100,
                   help="input events a window needs for a decision (default 100)")
    r.add_argument("--temperature", type=float, default=0.25,
                   help="softmax temperature of membrane decoders (default 0.25, as the demo)")
    r.add_argument("--noise-filter", type=int, default=0, metavar="US",
                   help="dv-processing background-activity filter with this window in us (default off)")
    r.add_argument("--refractory-us", type=int, default=0, help="per-pixel refractory filter (default off)")
    r.add_argument("--realtime", action="store_true",
                   help="pace a recording (or pcm:- input) to the wall clock")
    r.add_argument("--max-lag", type=float, default=100.0,
                   help="live sources: drop the oldest steps when behind by more than this many ms (default 100)")
    r.add_argument("--close-after", type=float, default=5.0, metavar="MS",
                   help="live sources: close a step this many ms after its end on the wall clock, whether or "
                        "not a later event came (default 5; inf: only events close steps)")
    r.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    r.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                   help="tcp:// sources: end after S seconds without events (default: wait for the sender "
                        "to disconnect)")
    r.add_argument("--device", default=None, metavar="URL",
                   help="run on a board over the device link (a serial port, socket://HOST:PORT, a pty path); "
                        "the model is uploaded when the board runs another")
    r.add_argument("--json", action="store_true", help="one JSON object per decision, then a summary")
    r.set_defaults(func=cmd_run)

    p = sub.add_parser("replay", help="serve a recording as a live dv-processing network stream")
    p.add_argument("file", metavar="FILE", help=".aedat4 or .bs2 recording")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to serve on, e.g. 127.0.0.1:7777")
    p.add_argument("--speed", type=float, default=1.0, help="stream seconds per wall second; 0: as fast as it goes")
    p.add_argument("--loop", action="store_true", help="start again at the end")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.add_argument("--linger", type=float, default=None,
                   help="seconds to keep the connection at the end for the client to catch up "
                        "(default 2, 30 with --speed 0)")
    p.set_defaults(func=cmd_replay)

    d = sub.add_parser("demo", help="gesture detection on the bundled real DVS Gesture recordings, streamed live")
    d.add_argument("--fast", action="store_true", help="stream as fast as it goes instead of at real-time pace")
    d.add_argument("--save-model", default=None, metavar="MODEL", help="also save the trained model (.esnn)")
    d.add_argument("--json", action="store_true",
                   help="one JSON object per detection; the last line is the summary")
    d.set_defaults(func=cmd_demo)
