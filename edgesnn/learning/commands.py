"""The learning verbs of the command line: `edgesnn train`, `edgesnn eval`.

Registered by edgesnn/cli.py with ``add_verbs(sub)``; heavy imports happen inside each verb.

A trained model is saved as an ordinary model file (the learned int16 weights) plus a sidecar
``MODEL.data.json`` holding the reader and its preprocessing options, so that `edgesnn eval` prepares the
data the same way (options given in eval's SPEC take precedence).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


# per reader: the held-out part when the SPEC does not select one itself
DEFAULT_SPLITS = {
    "nmnist": ({"split": "train"}, {"split": "val"}, ("split",)),
    "fsdd": ({"index": "5-49"}, {"index": "0-4"}, ("index", "speakers", "exclude")),
    "dvsgesture": ({"part": "head"}, {"part": "tail"}, ("part",)),
}

# reader options the trainer adds when the SPEC does not give them (the model's input front-end)
READER_DEFAULTS = {
    "fsdd": {"delays": "0,4,8,12", "norm": "peak", "env_shift": 7, "gate": 100},
}

# good defaults per (reader, rule): options for train(), chosen on the validation sets (docs/learning.md)
DEFAULTS = {
    "nmnist": {"epochs": 10, "hidden": 1024, "readout_tau_steps": None, "teach_from": 0.0, "gain": 2 ** -4,
               "hidden_gain": 2 ** -9, "anneal": 2, "hidden_epochs": 3, "conv": 16, "center": 6},
    "fsdd": {"epochs": 12, "hidden": 2048, "in_gain": 0.7, "readout_tau_steps": None, "teach_from": 0.0,
             "gain": 2 ** -2, "hidden_gain": 2 ** -10, "anneal": 4, "hidden_epochs": 2, "center": 6, "trial": 3,
             "readout_init": 0.0, "readout_shift": 15},
    "dvsgesture": {"epochs": 10, "hidden": 256, "readout_tau_steps": None, "teach_from": 0.0, "gain": 2 ** -5,
                   "hidden_gain": 2 ** -8, "anneal": 3, "hidden_epochs": 3},
}


def sidecar(model_path) -> Path:
    return Path(str(model_path) + ".data.json")


def _spec(reader, path, opts):
    q = "&".join(f"{k}={v}" for k, v in opts.items())
    return f"{reader}:{path}" + (f"?{q}" if q else "")


def _progress(args):
    if args.quiet:
        return None
    from ..cli import progress
    return progress("train")


def cmd_train(args):

    from ..data import open_dataset, parse_spec
    from ..model import modelfile
    from . import train as T

    reader, path, opts = parse_spec(args.data)
    opts = {**READER_DEFAULTS.get(reader, {}), **opts}
    d = dict(DEFAULTS[reader])
    tr_sel, va_sel, keys = DEFAULT_SPLITS[reader]
    if args.val:
        v_reader, v_path, v_opts = parse_spec(args.val)
        v_opts = {**READER_DEFAULTS.get(v_reader, {}), **v_opts}
        train_spec, val_spec = _spec(reader, path, opts), _spec(v_reader, v_path, v_opts)
    elif any(k in opts for k in keys):
        train_spec, val_spec = _spec(reader, path, opts), None
    else:
        train_spec, val_spec = _spec(reader, path, {**opts, **tr_sel}), _spec(reader, path, {**opts, **va_sel})
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"reading {train_spec}" + (f" and {val_spec}" if val_spec else ""))
    tr = open_dataset(train_spec)
    va = open_dataset(val_spec) if val_spec else None
    epochs = args.epochs if args.epochs is not None else d["epochs"]
    hidden = args.hidden if args.hidden is not None else d["hidden"]
    net = T.default_network(tr, args.rule, hidden=hidden, seed=args.seed, readout_tau_steps=d["readout_tau_steps"],
                            conv=d.get("conv", 0), readout_init=d.get("readout_init", 0.01),
                            in_gain=d.get("in_gain", 1.0))
    model = T.initial_model(net, readout_shift=d.get("readout_shift"))
    eta = None if args.eta_shift is None else int(args.eta_shift)
    res = T.train(model, tr, args.rule, epochs=epochs, mode=args.mode, val=None, seed=args.seed,
                  progress=_progress(args), eta_shift=eta, teach_from=d["teach_from"], gain=d["gain"],
                  hidden_gain=d["hidden_gain"], anneal=d["anneal"], hidden_epochs=d["hidden_epochs"],
                  center=d.get("center", 0), trial=d.get("trial", 0))
    modelfile.save(res.model, args.out)
    side = {"reader": reader, "options": {k: v for k, v in tr.options.items()}, "rule": args.rule,
            "mode": args.mode}
    sidecar(args.out).write_text(json.dumps(side, indent=1) + "\n")
    out = {"model": args.out, "rule": args.rule, "mode": args.mode, "epochs": epochs, "hidden": hidden,
           "eta_shift": {str(k): v for k, v in res.eta_shift.items()},
           "train_seconds": round(res.seconds, 2), "learning_steps_per_s": round(res.steps / max(res.seconds, 1e-9)),
           "history": res.history}
    figures = []
    for name, ds in (("train", tr), ("val", va)):
        if ds is None:
            continue
        fx = T.evaluate(res.model, ds)
        fl = T.evaluate_float(res.float_net, ds)
        out[name] = {"n": len(ds.samples), "accuracy_fixed": fx, "accuracy_float": fl}
        figures.append(f"{name} ({len(ds.samples)}): fixed {100 * fx:.1f} %, float {100 * fl:.1f} %")
    from ..model.modelfile import model_hash
    out["hash"] = model_hash(res.model)
    text = (f"wrote {args.out} ({args.rule}, {args.mode} point training, {epochs} epochs, "
            f"{res.seconds:.0f} s, {out['learning_steps_per_s']:,} learning steps/s)\n" + "\n".join(figures))
    from ..cli import emit
    emit(args, out, text)


def cmd_eval(args):
    from ..data import open_dataset, parse_spec
    from ..model import modelfile
    from . import train as T

    model = modelfile.load(args.model)
    reader, path, opts = parse_spec(args.data)
    sc = sidecar(args.model)
    if sc.is_file():
        side = json.loads(sc.read_text())
        if side.get("reader") == reader:
            opts = {**{k: str(v) for k, v in side.get("options", {}).items()}, **opts}
    ds = open_dataset(_spec(reader, path, opts))
    T.check_dataset_fits(model, ds)
    acc = T.evaluate(model, ds)
    res = {"accuracy": acc, "n": len(ds.samples)}
    if args.float:
        res["accuracy_float"] = T.evaluate_float(model.dequantized(), ds)
    if args.json:
        print(json.dumps(res))
        return
    print(f"{args.model} on {args.data}: fixed point {100 * acc:.2f} % of {len(ds.samples)}"
          + (f" (float twin {100 * res['accuracy_float']:.2f} %)" if args.float else ""))
    print(json.dumps({"accuracy": acc, "n": len(ds.samples)}))


def add_verbs(sub) -> None:
    from .learner import RULE_HELP

    t = sub.add_parser("train", help="train a network with a local learning rule on a data set; save the model",
                       description="Rules: " + "; ".join(f"{k}: {v}" for k, v in RULE_HELP.items()))
    t.add_argument("--data", required=True, metavar="SPEC",
                   help="READER:PATH[?key=val&...]: nmnist:DIR, fsdd:DIR, dvsgesture:DIR (see edgesnn.data); "
                        "without a split option the reader's held-out part is the validation set")
    t.add_argument("--rule", required=True, choices=list(RULE_HELP), help="learning rule")
    t.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.esnn) (+ MODEL.data.json)")
    t.add_argument("--epochs", type=int, default=None, help="passes over the training set (default per data set)")
    t.add_argument("--mode", choices=["fixed", "float"], default="fixed",
                   help="fixed: learn in the device's integer arithmetic (default); float: the float twin, "
                        "then quantize")
    t.add_argument("--val", default=None, metavar="SPEC", help="validation data (default: the held-out part)")
    t.add_argument("--hidden", type=int, default=None, help="hidden neurons (default per data set)")
    t.add_argument("--eta-shift", type=int, default=None, metavar="K",
                   help="learning rate 2^-K for every layer (default: normalised per layer on the data)")
    t.add_argument("--seed", type=int, default=0, help="weights, order and PRNG seed (default 0)")
    t.add_argument("--quiet", action="store_true", help="no progress on stderr")
    t.add_argument("--json", action="store_true", help="print a JSON object")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="accuracy of a model on a data set (fixed point; last line JSON)")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("--data", required=True, metavar="SPEC", help="READER:PATH[?key=val&...] (as train)")
    e.add_argument("--float", action="store_true", help="also the float twin's accuracy")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)
