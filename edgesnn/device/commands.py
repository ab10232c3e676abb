"""Device verbs: `edgesnn emulate` (serve a model as an emulated device over TCP or a pseudo-terminal) and
`edgesnn adapt` (teach a learning device over the link, then measure it; edgesnn.learning.adapt)."""
from __future__ import annotations

import json
import signal
import sys
import time

from edgesnn.errors import EdgeSNNError


def add_learn_options(p, where: str) -> None:
    """--learn RULE, --learn-center C and --learn-trial K, shared by `edgesnn export` and `edgesnn emulate`."""
    p.add_argument("--learn", default=None, metavar="RULE",
                   help=f"the model learns on {where} with RULE (readout, etlp, decolle, eprop, stdp, rstdp): "
                        f"LEARN and the STEP teach fields of docs/protocol.md; needs plastic layers")
    p.add_argument("--learn-center", type=int, default=0, metavar="C",
                   help="with --learn: centre the readout's trace by a running mean of rate 2^-C (1..30; "
                        "default 0, off; docs/learning.md)")
    p.add_argument("--learn-trial", type=int, default=0, metavar="K",
                   help="with --learn: the readout learns once per trial (a run of steps with one label, ended "
                        "by LEARN RESET or another label) from the trial's means, keeping 2^-K of the running "
                        "mean of its trace (1..31; default 0, off: every step; docs/learning.md)")


def learn_options(args) -> dict | None:
    """The Learner keyword options of --learn-center and --learn-trial (None: the defaults); refuses them
    without --learn."""
    opts = {}
    for name in ("center", "trial"):
        v = getattr(args, f"learn_{name}", 0)
        if v and not args.learn:
            raise EdgeSNNError(f"--learn-{name} needs --learn RULE")
        if v:
            opts[name] = v
    return opts or None


def add_verbs(sub) -> None:
    e = sub.add_parser("emulate", help="serve a model as an emulated device (docs/protocol.md) over TCP or a pty")
    e.add_argument("model", metavar="MODEL", help="model file (.esnn)")
    e.add_argument("--listen", required=True, metavar="URL",
                   help="tcp://HOST:PORT (port 0 picks a free one) or pty (a new pseudo-terminal)")
    e.add_argument("--upload-capacity", type=int, default=None, metavar="BYTES",
                   help="largest model blob an upload may carry (default 1 MiB; 0 disables upload)")
    e.add_argument("--max-payload", type=int, default=4096, metavar="BYTES",
                   help="largest frame payload accepted (default 4096)")
    add_learn_options(e, "the emulated device")
    e.add_argument("--json", action="store_true",
                   help="the first stdout line is a JSON object (url, name, hash, inputs, outputs)")
    e.set_defaults(func=cmd_emulate)

    a = sub.add_parser("adapt", help="teach a device that learns (exported with --learn) from labelled DVS Gesture "
                                     "windows over the link, then classify held-out windows with learning off",
                       description="Each recording's first --learn-ms teach (windows of --window-ms every "
                                   "--stride-ms, the label on every step); the rest of it, cut into windows of "
                                   "--window-ms, is classified with learning off. An in-process twin (the "
                                   "fixed-point Learner rebuilt from the device's LEARN status) checks the "
                                   "device's learned weights and decisions bit for bit. Last line: JSON.")
    a.add_argument("model", metavar="MODEL", help="the model the device runs (.esnn), e.g. the dvs-adapt preset")
    a.add_argument("--port", required=True, metavar="URL",
                   help="the device: a serial port, socket://HOST:PORT (`edgesnn flash`, `edgesnn emulate`), a pty")
    a.add_argument("--data", required=True, metavar="SPEC", help="dvsgesture:DIR[?bin_ms=10&pool=4&binary=1]")
    a.add_argument("--epochs", type=int, default=4, help="passes over the training windows (default 4)")
    a.add_argument("--eta-shift", type=int, default=None, metavar="K",
                   help="learning rate 2^-K of every learning layer (default: normalised on the data)")
    a.add_argument("--learn-ms", type=float, default=900, help="teaching part of each recording (default 900)")
    a.add_argument("--window-ms", type=float, default=100, help="window length (default 100)")
    a.add_argument("--stride-ms", type=float, default=50, help="training window stride (default 50)")
    a.add_argument("--seed", type=int, default=0, help="order of the training windows (default 0)")
    a.add_argument("--no-twin", action="store_true",
                   help="no emulator twin (a device that has already learned cannot be followed)")
    a.add_argument("--timeout", type=float, default=10, help="seconds to wait for each reply (default 10)")
    a.add_argument("--quiet", action="store_true", help="no progress on stderr")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=cmd_adapt)


def cmd_adapt(args):
    from edgesnn.learning.adapt import adapt, gesture_windows
    from edgesnn.model import modelfile

    from .client import connect

    if args.epochs < 1:
        raise EdgeSNNError(f"--epochs {args.epochs}: at least 1")
    if args.eta_shift is not None and not 0 <= args.eta_shift <= 31:
        raise EdgeSNNError(f"--eta-shift {args.eta_shift}: 0..31")
    model = modelfile.load(args.model)
    data = gesture_windows(args.data, args.learn_ms, args.window_ms, args.stride_ms)
    say = (lambda m: None) if args.quiet else (lambda m: print(f"edgesnn adapt: {m}", file=sys.stderr, flush=True))
    prog = None
    if not args.quiet:
        from edgesnn.cli import progress
        prog = progress("adapt")
    with connect(args.port, timeout=args.timeout) as dev:
        rep = adapt(dev, model, data, epochs=args.epochs, eta_shift=args.eta_shift, seed=args.seed,
                    twin=not args.no_twin, progress=prog, say=say)
    if args.json:
        print(json.dumps(rep))
        return 0
    twin = ""
    if "weights_equal" in rep:
        twin = (f"; weights {'equal' if rep['weights_equal'] else 'DIFFER from'} the emulator's, decisions "
                f"{'equal' if rep['decisions_equal'] else 'DIFFER'}")
    print(f"{rep['device']}: learned {rep['train_windows']} windows x {rep['epochs']} epochs "
          f"({rep['learning_steps']} steps, {rep['learning_steps_per_s']:.0f} steps/s, eta 2^-{rep['eta_shift']}); "
          f"held-out windows: {100 * rep['accuracy']:.1f} % of {rep['n']}{twin}")
    print(json.dumps({"accuracy": rep["accuracy"], "n": rep["n"]}))
    return 0 if rep.get("weights_equal", True) and rep.get("decisions_equal", True) else 1


def parse_listen(url: str) -> tuple[str, int] | None:
    """('host', port) for tcp://HOST:PORT, None for pty."""
    if url == "pty":
        return None
    if url.startswith("tcp://"):
        host, sep, port = url[6:].rpartition(":")
        if sep and host and port.isdigit() and int(port) < 65536:
            return host.strip("[]"), int(port)
    raise EdgeSNNError(f"--listen {url!r}: use tcp://HOST:PORT (e.g. tcp://127.0.0.1:0 for a free port) or pty")


def cmd_emulate(args):
    from edgesnn.model import modelfile

    from .emulated import DEFAULT_UPLOAD_CAPACITY, EmulatedDevice

    where = parse_listen(args.listen)
    model = modelfile.load(args.model)
    cap = DEFAULT_UPLOAD_CAPACITY if args.upload_capacity is None else args.upload_capacity
    dev = EmulatedDevice(model, upload_capacity=cap, max_payload=args.max_payload, learn_rule=args.learn,
                         learn_options=learn_options(args))

    def log(msg):
        print(f"edgesnn emulate: {msg}", file=sys.stderr, flush=True)

    try:
        server = dev.serve_pty(log) if where is None else dev.serve_tcp(*where, log=log)
    except OSError as e:
        raise EdgeSNNError(f"--listen {args.listen}: cannot listen ({e.strerror or e}); pick another port "
                           f"or use port 0") from e
    info = dev.info
    if args.json:
        print(json.dumps({"url": server.url, "name": info.name, "hash": info.hash_hex,
                          "n_inputs": info.n_inputs, "n_outputs": info.n_outputs,
                          "max_payload": info.max_payload, "upload_capacity": info.upload_capacity,
                          **({"learn": args.learn} if args.learn else {})}), flush=True)
    else:
        print(server.url, flush=True)
    log(f"serving {args.model} (hash {info.hash_hex[:16]}) at {server.url}; Ctrl-C stops")
    # a shell starts background jobs with SIGINT ignored; Ctrl-C (and SIGTERM) must still stop cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.close()
    return 0
