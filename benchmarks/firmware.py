"""Firmware benchmark: python benchmarks/firmware.py [--json] [--quick]

1. Instructions per time step on a Cortex-M4 (QEMU mps2-an386, -icount shift=0, SysTick read around
   esnn_step; docs/devices.md): the w2 preset on 5 % Bernoulli input, the dvs-conv preset on the real
   DVS Gesture recordings (first 300 ms of each, 128x128 -> 2x32x32, 1 ms steps), with the Cortex-M3
   (mps2-an385: no DSP extension, so no packed SIMD) next to it. Every run is also a bit-exact check
   against the emulator (`identical`).
2. Instructions per synaptic operation of event-driven dense layers: single Dense layers (the shapes of
   the presets' dense layers) with non-spiking neurons, fed Bernoulli input at three rates; synaptic
   operations counted from the emulator's input events (each event adds its row of n_out weights). The
   slope of instructions against synaptic operations is the cost of one synapse; the intercept is the
   neuron update and the step's fixed cost.
3. Flash and RAM of the application firmware of every preset on every board profile.

Next to the figures: the published anchor of about 27,000 cycles per time step for a recurrent SNN on
a Cortex-M4 at 180 MHz (150.4 us worst case on downsampled N-MNIST; Boretti et al., ISCAS 2023). QEMU
counts instructions, not cycles: a Cortex-M4 takes one cycle for most instructions and two for a load
that is not pipelined with another, so cycles are somewhat above instructions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANCHOR = {"cycles_per_step": 27_000, "us_worst_case": 150.4, "clock_mhz": 180,
          "what": "recurrent SNN on a Cortex-M4 at 180 MHz, downsampled N-MNIST",
          "source": "Boretti et al., ISCAS 2023"}
M4 = "qemu-mps2-an386"
M3 = "qemu-mps2-an385"


def data_dir():
    for d in (os.environ.get("EDGESNN_DATA"), ROOT.parent / "shared" / "data"):
        if d and (Path(d) / "dvs_gesture_10").is_dir():
            return Path(d) / "dvs_gesture_10"
    return None


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def per_step(model, events, board, work):
    from firmware_gen import verify as V
    res = V.verify(model, board, events, work_dir=work, timeout=1800)
    if not res["identical"]:
        raise SystemExit(f"{board}: the firmware differs from the emulator: {res['first_mismatch']}")
    return res


def synops_per_step(model, events):
    """Synaptic operations (weights added) per step, from the emulator's spikes: every presynaptic
    event or spike adds its fan-out (edgesnn.model.info.fan_out), a recurrent layer also n_out per own
    spike of the previous step."""
    from edgesnn.model.info import fan_out
    from edgesnn.model.spec import Recurrent
    from edgesnn.simulator import Simulator

    net = model.network
    sim = Simulator.fixed(model)
    rec = sim.run(events, record="spikes")
    shapes = [net.input_shape] + net.shapes()
    dense_in = events.to_dense(int(net.n_inputs)).astype(np.float64)
    total = np.zeros(events.n_steps)
    base = sim.layer_base
    pre = dense_in
    for i, layer in enumerate(net.layers):
        fo = fan_out(layer, shapes[i], shapes[i + 1])
        total += pre @ fo
        own = rec.spikes[:, base[i]:base[i + 1]].astype(np.float64)
        if isinstance(layer, Recurrent):
            total[1:] += own[:-1].sum(axis=1) * own.shape[1]
        pre = own
    return total


def bench_steps(quick: bool, work: Path):
    from edgesnn.model import presets
    from edgesnn.model.quantize import quantize
    from firmware_gen import verify as V

    rows = []
    w2 = quantize(presets.make("w2"))
    steps = 100 if quick else 300
    ev, what = V.load_input("random:0.05", w2, steps)
    syn = synops_per_step(w2, ev)
    for board in (M4, M3):
        _say(f"w2 on {board}")
        r = per_step(w2, ev, board, work / f"w2-{board}")
        ins = np.asarray(r["instructions"]["per_step"], np.float64)
        rows.append({"model": "w2", "board": board, "input": "Bernoulli 5 %", "steps": r["steps"],
                     "events_per_step": ev.idx.size / steps, "synops_per_step": float(syn.mean()),
                     "instructions_mean": float(ins.mean()), "instructions_max": float(ins.max()),
                     "instructions_per_synop": float(ins.sum() / syn.sum()), "identical": r["identical"],
                     "flash_bytes": r["flash_bytes"], "ram_bytes": r["ram_bytes"]})
    d = data_dir()
    if d is None:
        _say("DVS Gesture recordings not found (../shared/data or $EDGESNN_DATA): dvs-conv skipped")
        return rows
    dvs = quantize(presets.make("dvs-conv"))
    files = sorted(d.glob("*.bs2"), key=lambda p: int(p.stem))[:2 if quick else 10]
    T = 100 if quick else 300
    for board in (M4, M3) if not quick else (M4,):
        all_ins, all_syn, n_ev, maxes = [], [], 0, []
        for f in files:
            _say(f"dvs-conv on {board}: {f.name}")
            ev, _ = V.load_input(str(f), dvs, T)
            r = per_step(dvs, ev, board, work / f"dvs-{board}")
            ins = np.asarray(r["instructions"]["per_step"], np.float64)
            all_ins.append(ins)
            all_syn.append(synops_per_step(dvs, ev))
            n_ev += ev.idx.size
            maxes.append(ins.max())
        ins, syn = np.concatenate(all_ins), np.concatenate(all_syn)
        rows.append({"model": "dvs-conv", "board": board,
                     "input": f"DVS Gesture {len(files)} rec. x {T} ms", "steps": int(ins.size),
                     "events_per_step": n_ev / ins.size, "synops_per_step": float(syn.mean()),
                     "instructions_mean": float(ins.mean()), "instructions_max": float(max(maxes)),
                     "instructions_per_synop": float(ins.sum() / syn.sum()), "identical": True,
                     "flash_bytes": r["flash_bytes"], "ram_bytes": r["ram_bytes"]})
    return rows


DENSE_SHAPES = [  # (n_in, n_out, where it comes from)
    (2048, 512, "w1 layer 0"),
    (2048, 128, "dvs-conv layer 5"),
    (64, 256, "w2 layer 0 (input weights)"),
    (512, 11, "w1 layer 1"),
]


def bench_dense(quick: bool, work: Path):
    from edgesnn.model.quantize import quantize
    from edgesnn.model.spec import Dense, Network, Neuron
    from edgesnn.frontends.encoders import rate_encode

    rows = []
    rates = (0.01, 0.03, 0.05)
    steps = 60 if quick else 200
    shapes = DENSE_SHAPES[:2] if quick else DENSE_SHAPES
    for n_in, n_out, where in shapes:
        rng = np.random.default_rng(n_in * 7 + n_out)
        # LIF neurons that never reach threshold: the neuron update costs the same at every rate
        net = Network((n_in,), [Dense(rng.normal(0, 0.05, (n_out, n_in)),
                                      Neuron("lif", tau_mem=20e-3, threshold=1e4))], name=f"dense{n_in}x{n_out}")
        model = quantize(net)
        for board in (M4, M3):
            xs, ys = [], []
            for rate in rates:
                _say(f"dense {n_in}x{n_out} on {board} at {rate:.0%}")
                ev = rate_encode(np.full(n_in, rate), n_steps=steps, seed=1)
                r = per_step(model, ev, board, work / f"dense-{board}")
                ins = np.asarray(r["instructions"]["per_step"], np.float64)
                syn = np.diff(ev.ptr).astype(np.float64) * n_out        # every event adds a row of n_out
                xs.append(syn)
                ys.append(ins)
            x, y = np.concatenate(xs), np.concatenate(ys)
            slope, intercept = np.polyfit(x, y, 1)
            rows.append({"layer": f"dense {n_in} -> {n_out}", "from": where, "board": board,
                         "instructions_per_synop": float(slope), "fixed_instructions_per_step": float(intercept),
                         "fixed_per_neuron": float(intercept / n_out),
                         "overall_per_synop_at_5pct": float(ys[-1].sum() / xs[-1].sum())})
    return rows


PRESETS = ("w1", "w2", "dvs-conv", "kws")


def bench_footprint(quick: bool, work: Path):
    from edgesnn.model import presets
    from edgesnn.model.quantize import quantize
    from firmware_gen import build, export, profiles

    rows = []
    models = {p: quantize(presets.make(p)) for p in (PRESETS if not quick else ("w2", "kws"))}
    for prof in profiles.all_profiles():
        for name, model in models.items():
            _say(f"footprint: {name} on {prof.name}")
            d = work / f"fp-{prof.name}-{name}"
            export.export_project(model, prof, d)
            rep = build.build_project(d)
            rows.append({"profile": prof.name, "model": name, "flash_bytes": rep["flash_bytes"],
                         "ram_bytes": rep["ram_bytes"], "flash_limit": rep["flash_limit"],
                         "ram_limit": rep["ram_limit"], "fits": rep["fits"]})
    return rows


def run(quick: bool = False, keep=None) -> dict:
    with tempfile.TemporaryDirectory(prefix="esnn-bench-fw-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        out = {"steps": bench_steps(quick, work), "dense": bench_dense(quick, work),
               "footprint": bench_footprint(quick, work), "anchor": ANCHOR, "quick": quick,
               "method": "QEMU 7.2 -icount shift=0; SysTick ticks around esnn_step x 1e9 / systick_hz; "
                         "arm-none-eabi-gcc 12 -O2; instructions, not cycles"}
    return out


def _kib(n):
    return f"{n / 1024:,.1f}"


def format_table(r: dict) -> str:
    L = []
    L.append("Instructions per time step (QEMU, -icount shift=0; instructions, not cycles)")
    L.append(f"{'model':<9} {'board':<17} {'input':<38} {'steps':>5} {'ev/step':>8} {'synops/step':>11} "
             f"{'instr/step':>11} {'max':>10} {'instr/synop':>11}")
    for s in r["steps"]:
        L.append(f"{s['model']:<9} {s['board']:<17} {s['input']:<38} {s['steps']:>5} {s['events_per_step']:>8.1f} "
                 f"{s['synops_per_step']:>11,.0f} {s['instructions_mean']:>11,.0f} {s['instructions_max']:>10,.0f} "
                 f"{s['instructions_per_synop']:>11.2f}")
    a = r["anchor"]
    L.append(f"anchor: ~{a['cycles_per_step']:,} cycles per step, {a['what']} ({a['us_worst_case']} us worst case "
             f"at {a['clock_mhz']} MHz; {a['source']})")
    w2 = next((s for s in r["steps"] if s["model"] == "w2" and s["board"] == M4), None)
    if w2:
        L.append(f"w2 on the M4: {w2['instructions_mean']:,.0f} instructions per step on average, "
                 f"{w2['instructions_max']:,.0f} at most = {w2['instructions_max'] / a['clock_mhz']:.0f} us at "
                 f"{a['clock_mhz']} MHz if one instruction took one cycle")
    L.append("")
    L.append("Event-driven dense layers: instructions per synaptic operation (slope over 1, 3, 5 % input)")
    L.append(f"{'layer':<18} {'shape of':<28} {'board':<17} {'instr/synop':>11} {'fixed/step':>10} "
             f"{'per neuron':>10} {'all-in at 5%':>12}")
    for d in r["dense"]:
        L.append(f"{d['layer']:<18} {d['from']:<28} {d['board']:<17} {d['instructions_per_synop']:>11.2f} "
                 f"{d['fixed_instructions_per_step']:>10,.0f} {d['fixed_per_neuron']:>10.1f} "
                 f"{d['overall_per_synop_at_5pct']:>12.2f}")
    L.append("target: <= 3 instructions per synaptic operation")
    L.append("")
    L.append("Flash / RAM of the application firmware (KiB; RAM includes the stack; * = does not fit)")
    models = list(dict.fromkeys(f["model"] for f in r["footprint"]))
    profs = list(dict.fromkeys(f["profile"] for f in r["footprint"]))
    L.append(f"{'profile':<20} {'flash/RAM':>17} " + " ".join(f"{m:>22}" for m in models))
    for p in profs:
        cells = []
        lim = None
        for m in models:
            f = next(x for x in r["footprint"] if x["profile"] == p and x["model"] == m)
            lim = f
            cells.append(f"{_kib(f['flash_bytes']) + ' / ' + _kib(f['ram_bytes']) + ('*' if not f['fits'] else ' '):>22}")
        L.append(f"{p:<20} {_kib(lim['flash_limit']) + ' / ' + _kib(lim['ram_limit']):>17} " + " ".join(cells))
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark the firmware on emulated Cortex-M boards.")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--quick", action="store_true", help="fewer steps, models and recordings (a smoke run)")
    ap.add_argument("--keep", default=None, help="keep the build directories here")
    args = ap.parse_args(argv)
    r = run(quick=args.quick, keep=args.keep)
    print(json.dumps(r) if args.json else format_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
