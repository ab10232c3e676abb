"""`edgesnn <verb>`: the command line. Each verb is a small function; heavy imports happen inside it."""
from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import EdgeSNNError


def progress(label: str):
    """A one-line progress report on stderr (kept off stdout so --json output stays clean)."""
    def report(done, total, note=""):
        if not sys.stderr.isatty() and done not in (0, total):
            return
        bar = "#" * int(30 * done / max(total, 1))
        sys.stderr.write(f"\r{label} [{bar:<30}] {done}/{total} {note}"[:120])
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return report


def emit(args, obj, text: str):
    print(json.dumps(obj) if args.json else text)


# ---------------------------------------------------------------- verbs

def cmd_create(args):
    from .model import modelfile, presets
    from .model.quantize import quantize

    net = presets.make(args.preset, seed=args.seed)
    model = quantize(net)
    modelfile.save(model, args.out)
    h = modelfile.model_hash(model)
    emit(args, {"model": args.out, "preset": args.preset, "seed": args.seed, "hash": h},
         f"wrote {args.out}: preset {args.preset}, seed {args.seed}, {len(net.layers)} layers, hash {h[:16]}")


def cmd_info(args):
    from .model import info, modelfile

    model = modelfile.load(args.model)
    d = info.describe(model, input_rate=args.rate)
    text = info.format_info(d)
    if args.agreement:
        d["agreement"] = measure_agreement(model, args.rate, args.samples, args.steps)
        rows = [f"  layer {i}: {a:.3f}" for i, a in enumerate(d["agreement"])]
        text += (f"\nspike-count agreement, fixed vs float ({args.samples} Bernoulli samples of {args.steps} "
                 f"steps at rate {args.rate}):\n" + "\n".join(rows))
    emit(args, d, text)


def measure_agreement(model, rate, n_samples, n_steps):
    import numpy as np

    from .model.agreement import spike_count_agreement
    from .simulator import Events

    rng = np.random.default_rng(model.network.seed)
    n = model.network.n_inputs
    samples = [Events.from_dense(rng.random((n_steps, n)) < rate) for _ in range(n_samples)]
    return spike_count_agreement(model, samples)


def cmd_bench(args):
    if args.what == "kernels":
        from .bench import kernels

        results = kernels.run(quick=args.quick, progress=None if args.json else progress("bench"))
        emit(args, results, kernels.format_table(results))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgesnn", description="Spiking neural networks in real time at the edge.")
    p.add_argument("--version", action="version", version=f"edgesnn {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    c = sub.add_parser("create", help="make a randomly initialised network from a preset and save it")
    c.add_argument("--preset", required=True, help="w1, w2, dvs-conv or kws (see `edgesnn create --help`)")
    c.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.esnn)")
    c.add_argument("--seed", type=int, default=0, help="random seed of weights and PRNG (default 0)")
    c.add_argument("--json", action="store_true", help="print a JSON object")
    c.set_defaults(func=cmd_create)

    i = sub.add_parser("info", help="layers, memory and synaptic operations of a model")
    i.add_argument("model", metavar="MODEL")
    i.add_argument("--rate", type=float, default=0.02,
                   help="input events per input per step for the activity estimate (default 0.02)")
    i.add_argument("--agreement", action="store_true",
                   help="also measure the fixed-vs-float spike-count agreement per layer on random input")
    i.add_argument("--samples", type=int, default=4, help="samples for --agreement (default 4)")
    i.add_argument("--steps", type=int, default=200, help="steps per sample for --agreement (default 200)")
    i.add_argument("--json", action="store_true", help="print a JSON object")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="benchmarks that print tables")
    b.add_argument("what", choices=["kernels"], help="kernels: W1/W2/W3 against a numpy reference")
    b.add_argument("--quick", action="store_true", help="fewer steps (a smoke run, not a measurement)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EdgeSNNError as e:
        print(f"edgesnn {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"edgesnn {args.verb}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
