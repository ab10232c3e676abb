"""`edgesnn emulate`: serve a model as an emulated device over TCP or a pseudo-terminal."""
from __future__ import annotations

import json
import signal
import sys
import time

from edgesnn.errors import EdgeSNNError


def add_verbs(sub) -> None:
    e = sub.add_parser("emulate", help="serve a model as an emulated device (docs/protocol.md) over TCP or a pty")
    e.add_argument("model", metavar="MODEL", help="model file (.esnn)")
    e.add_argument("--listen", required=True, metavar="URL",
                   help="tcp://HOST:PORT (port 0 picks a free one) or pty (a new pseudo-terminal)")
    e.add_argument("--upload-capacity", type=int, default=None, metavar="BYTES",
                   help="largest model blob an upload may carry (default 1 MiB; 0 disables upload)")
    e.add_argument("--max-payload", type=int, default=4096, metavar="BYTES",
                   help="largest frame payload accepted (default 4096)")
    e.add_argument("--learn", default=None, metavar="RULE",
                   help="the model learns on the emulated device with RULE (readout, etlp, decolle, eprop, stdp, "
                        "rstdp): LEARN and the STEP teach fields (docs/protocol.md)")
    e.add_argument("--json", action="store_true",
                   help="the first stdout line is a JSON object (url, name, hash, inputs, outputs)")
    e.set_defaults(func=cmd_emulate)


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
    dev = EmulatedDevice(model, upload_capacity=cap, max_payload=args.max_payload, learn_rule=args.learn)

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
