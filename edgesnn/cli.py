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


# ---------------------------------------------------------------- firmware (firmware_gen, docs/devices.md)

def cmd_devices(args):
    from firmware_gen import profiles

    profs = profiles.all_profiles()
    rows = [p.summary() for p in profs]
    lines = [f"{'profile':<20} {'core':<14} {'FPU':<12} {'clock':>8} {'flash':>9} {'RAM':>9}  {'UART':<13} runs here"]
    for p in profs:
        lines.append(f"{p.name:<20} {p.core:<14} {p.fpu:<12} {p.clock_hz / 1e6:>5.0f} MHz {p.flash_size // 1024:>6} KiB "
                     f"{p.ram_size // 1024:>5} KiB  {p.uart['kind']:<13} "
                     f"{'QEMU ' + p.qemu['machine'] if p.qemu else 'no (build only; flash: ' + p.flash_method['method'] + ')'}")
    emit(args, {"devices": rows}, "\n".join(lines))


def cmd_export(args):
    from firmware_gen import export, profiles
    from .model import modelfile

    if args.target != "c":
        raise EdgeSNNError(f"--target {args.target!r}: only 'c' (a C99 firmware project) exists")
    prof = profiles.load(args.device)
    model = modelfile.load(args.model)
    from .device.commands import learn_options
    res = export.export_project(model, prof, args.out, mode=args.mode, learn_rule=args.learn,
                                learn_options=learn_options(args))
    learns = f", learning with {args.learn}" if args.learn else ""
    emit(args, res, f"wrote {args.out}: {args.mode} firmware of {model.network.name!r} for {prof.name}{learns} "
                    f"({len(res['files'])} files); build it with `edgesnn build {args.out}` or `make -C {args.out}`")


def cmd_build(args):
    from firmware_gen import build

    rep = build.build_project(args.dir, clean=args.clean)
    text = (f"{rep['profile']}: flash {rep['flash_bytes']:,} of {rep['flash_limit']:,} bytes "
            f"({100 * rep['flash_bytes'] / rep['flash_limit']:.1f} %), RAM {rep['ram_bytes']:,} of "
            f"{rep['ram_limit']:,} bytes ({100 * rep['ram_bytes'] / rep['ram_limit']:.1f} %, with a "
            f"{rep['stack_bytes']:,}-byte stack): {'fits' if rep['fits'] else 'DOES NOT FIT'}\n  {rep['elf']}")
    if rep["fits"] or args.json:
        emit(args, rep, text)
    build.check_fits(rep)


def cmd_verify(args):
    from firmware_gen import profiles, verify
    from .model import modelfile

    model = modelfile.load(args.model)
    events, what = verify.load_input(args.input, model, args.steps)
    say = None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.port:
        return verify_port(args, model, events, what, say)
    if not args.device:
        raise EdgeSNNError("verify needs --device PROFILE (an emulated board: built and run under QEMU) or "
                           "--port URL (a board running the application firmware, over the device link)")
    prof = profiles.load(args.device)
    res = verify.verify(model, prof, events, work_dir=args.keep, timeout=args.timeout, progress=say)
    res["input"] = what
    res_out = dict(res)
    if not args.per_step:
        res_out["instructions"] = {k: v for k, v in res["instructions"].items() if k != "per_step"}
    ins = res["instructions"]
    m = res["first_mismatch"]
    text = [f"{prof.name}: {what}",
            "identical: every layer's spikes and every v, i, a at every step" if res["identical"] else
            f"DIFFERENT: first at step {m['step']}, layer {m['layer']}, neuron {m['neuron']} ({m['what']}): "
            f"emulator {m['emulator']}, device {m['device']}",
            f"instructions per step: mean {ins['mean']:,.0f}, min {ins['min']:,.0f}, max {ins['max']:,.0f} "
            f"(QEMU -icount, resolution {ins['resolution']:g}; calibration loop ratio "
            f"{res['icount_check']['ratio']:.4f})" if ins["mean"] is not None else "no steps run",
            f"flash {res['flash_bytes']:,} B, RAM {res['ram_bytes']:,} B (verify build, input included)"]
    emit(args, res_out, "\n".join(text))
    return 0 if res["identical"] else 1


def verify_port(args, model, events, what, say):
    from firmware_gen.linkverify import verify_link

    res = verify_link(model, args.port, events, progress=say)
    res["input"] = what
    m, cyc = res["first_mismatch"], res["cycles"]
    text = [f"{res['device']} at {res['url']}: {what}",
            f"identical: output spikes and membrane at every step, every v, i, a of every layer after every "
            f"chunk ({res['steps']} steps)" if res["identical"] else
            f"DIFFERENT: first at step {m['step']}, layer {m['layer']}, {m['what']}"
            + (f" of neuron {m['neuron']}" if m["neuron"] is not None else "")
            + f": emulator {m['emulator']}, device {m['device']}"]
    if cyc:
        text.append(f"cycles per step: mean {cyc['mean']:,.0f}, min {cyc['min']:,.0f}, max {cyc['max']:,.0f} "
                    f"at {cyc['clock_hz'] / 1e6:g} MHz")
    emit(args, res, "\n".join(text))
    return 0 if res["identical"] else 1


def cmd_flash(args):
    from firmware_gen import flash as F

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    bar = progress("stm32-uart") if args.method == "stm32-uart" else None
    res = F.flash(args.dir, args.device, port=args.port, method=args.method, drive=args.drive,
                  timeout=args.timeout, detach=args.detach, progress=bar, say=say)
    if res.proc is None:                                           # a real board
        d = res.details
        summary = f"flashed {res.image} to {res.profile} with {res.method}" + (
            f" ({d['bytes']:,} bytes at 0x{d['address']:08X}, {'verified, ' if d['verified'] else ''}"
            f"{d['seconds']:.1f} s)" if res.method == "stm32-uart" else "")
        emit(args, res.to_json(), res.url or summary)
        if res.url and not args.json:
            say(f"{summary}; HELLO from {res.url}, model hash {res.hash}")
        return 0
    out = {"url": res.url, "pid": res.pid, "profile": res.profile, "hash": res.hash, "detached": args.detach,
           "log": res.log}
    print(json.dumps(out) if args.json else res.url + (f"\npid {res.pid}" if args.detach else ""), flush=True)
    if args.detach:
        say(f"QEMU (pid {res.pid}) keeps running {res.profile} in the background, model hash {res.hash}; "
            f"stop it with `kill {res.pid}`")
        return 0
    say(f"{res.profile} runs under QEMU (pid {res.pid}), model hash {res.hash}; connect to {res.url}. "
        f"Ctrl-C stops it")
    return F.hold(res, say)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgesnn", description="Spiking neural networks in real time at the edge.")
    p.add_argument("--version", action="version", version=f"edgesnn {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    c = sub.add_parser("create", help="make a randomly initialised network from a preset and save it")
    c.add_argument("--preset", required=True, help="w1, w2, dvs-conv, dvs-adapt or kws (edgesnn.model.presets)")
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

    d = sub.add_parser("devices", help="list the board profiles (devices/*.toml)")
    d.add_argument("--json", action="store_true", help="print a JSON object")
    d.set_defaults(func=cmd_devices)

    e = sub.add_parser("export", help="write a self-contained firmware project (C99, board glue, Makefile)")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("--target", default="c", help="c: a C99 project for arm-none-eabi-gcc (the only target)")
    e.add_argument("--device", required=True, metavar="PROFILE", help="board profile (`edgesnn devices`)")
    e.add_argument("--out", required=True, metavar="DIR", help="project directory to write")
    e.add_argument("--mode", choices=["app"], default="app",
                   help="app: the model driven over the UART (verify builds come from `edgesnn verify`)")
    from .device.commands import add_learn_options
    add_learn_options(e, "the board")
    e.add_argument("--json", action="store_true", help="print a JSON object")
    e.set_defaults(func=cmd_export)

    bd = sub.add_parser("build", help="build an exported project with the cross toolchain; flash and RAM use")
    bd.add_argument("dir", metavar="DIR")
    bd.add_argument("--clean", action="store_true", help="rebuild everything")
    bd.add_argument("--json", action="store_true", help="print a JSON object")
    bd.set_defaults(func=cmd_build)

    v = sub.add_parser("verify", help="run a model on a board and on the emulator; compare every step")
    v.add_argument("model", metavar="MODEL")
    v.add_argument("--device", default=None, metavar="PROFILE",
                   help="an emulated board profile: build the verify firmware and run it under QEMU")
    v.add_argument("--input", required=True, metavar="SRC",
                   help="random:RATE (Bernoulli, model seed), PATH.bs2[:WxH] (DVS events), empty or all")
    v.add_argument("--steps", type=int, default=None,
                   help="steps to run (default: 100 for random/empty/all, the whole recording for .bs2)")
    v.add_argument("--port", default=None, metavar="URL",
                   help="instead: a board running the application firmware (a serial port, socket://HOST:PORT "
                        "from `edgesnn flash`, a pty), checked over the device link")
    v.add_argument("--keep", default=None, metavar="DIR", help="keep the verify project in DIR (reused)")
    v.add_argument("--timeout", type=float, default=600, help="seconds QEMU may run (default 600)")
    v.add_argument("--per-step", action="store_true", help="include every step's instruction count (--json)")
    v.add_argument("--json", action="store_true", help="print a JSON object")
    v.set_defaults(func=cmd_verify)

    fl = sub.add_parser("flash", help="put an exported project on its board (emulated: start QEMU, UART on TCP)")
    fl.add_argument("dir", metavar="DIR", help="an exported project (built first when needed)")
    fl.add_argument("--device", default=None, metavar="PROFILE",
                    help="board profile (default: the one the project was exported for)")
    fl.add_argument("--port", default=None, metavar="URL",
                    help="emulated: socket://127.0.0.1:PORT for the UART (default: a free port); real board: "
                         "the firmware's serial port, HELLO is awaited there after flashing; stm32-uart: the "
                         "boot loader's serial port")
    fl.add_argument("--method", default=None, choices=["qemu", "openocd", "pyocd", "st-flash", "nrfjprog",
                                                       "picotool", "uf2", "stm32-uart"],
                    help="override the profile's [flash_method] (e.g. stm32-uart: the ROM boot loader)")
    fl.add_argument("--drive", default=None, metavar="PATH", help="uf2: the mounted boot drive (default: look "
                                                                  "under /media/$USER and /run/media/$USER)")
    fl.add_argument("--detach", action="store_true", help="emulated: leave QEMU running in the background")
    fl.add_argument("--timeout", type=float, default=30, help="seconds to wait for HELLO (default 30)")
    fl.add_argument("--json", action="store_true", help="print a JSON object")
    fl.set_defaults(func=cmd_flash)

    from .streams.commands import add_verbs as add_stream_verbs  # run, replay, demo
    add_stream_verbs(sub)
    from .learning.commands import add_verbs as add_learning_verbs  # train, eval
    add_learning_verbs(sub)
    from .device.commands import add_verbs as add_device_verbs  # emulate
    add_device_verbs(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except EdgeSNNError as e:
        print(f"edgesnn {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"edgesnn {args.verb}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
