"""Learning costs: python benchmarks/learning.py [--json] [--quick] [--no-qemu]

1. bytes of learning state per neuron, per synapse, per input and per layer for each rule (docs/learning.md,
   "State per rule"), for the N-MNIST-sized network (578 inputs -> Dense 256 LIF -> Dense 10 LI, both
   plastic) and the FSDD e-prop network (32 inputs -> Recurrent 128 ALIF -> Dense 10 LI);
2. host throughput, one core, same process: learning steps/s (forward + update, fixed point and float twin)
   against inference-only steps/s (the same Simulator.step loop with learning off, and the compiled
   Simulator.run loop), on random input at 5 % activity;
3. instructions per learning step on a Cortex-M4 under QEMU (qemu-mps2-an386, the "learn" firmware of
   firmware_gen, board/learn_main.c, -icount shift=0 so SysTick ticks count instructions): for every rule on
   both networks, 100 labelled steps of the same random input (--quick: 20 steps, three rules), learning on
   every step and a reset every 50 steps; forward + learning against the forward pass alone (the firmware
   runs the steps again with learning off), synapse updates per step, instructions per synapse update, the
   learner's buffer bytes, and whether the learned int16 weights equal the Python fixed-point Learner's on
   the same steps. Needs arm-none-eabi-gcc, make and qemu-system-arm (skipped with a note otherwise, or
   with --no-qemu); build directories go to a temporary directory.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from edgesnn.errors import EdgeSNNError  # noqa: E402
from edgesnn.learning import RULES, Learner  # noqa: E402
from edgesnn.model.quantize import quantize  # noqa: E402
from edgesnn.model.spec import Dense, Network, Neuron, Recurrent  # noqa: E402
from edgesnn.simulator import Events, Simulator  # noqa: E402


def nmnist_net(seed=0):
    rng = np.random.default_rng(seed)
    lif = Neuron("lif", tau_mem=50e-3, threshold=1.0)
    return Network((578,), [Dense(rng.normal(0, 0.08, (256, 578)), lif, plastic=True),
                            Dense(rng.normal(0, 0.05, (10, 256)), Neuron("li", tau_mem=50e-3), plastic=True)],
                   dt=10e-3, seed=seed)


def fsdd_net(seed=0):
    rng = np.random.default_rng(seed)
    alif = Neuron("alif", tau_mem=50e-3, threshold=1.0, adapt_step=0.05, tau_adapt=1.0)
    return Network((32,), [Recurrent(rng.normal(0, 0.2, (128, 32)), rng.normal(0, 0.05, (128, 128)), alif,
                                     plastic=True),
                           Dense(rng.normal(0, 0.05, (10, 128)), Neuron("li", tau_mem=50e-3), plastic=True)],
                   dt=10e-3, seed=seed)


def throughput(model, rule, events, mode, reg):
    lr = Learner(model, rule, mode=mode, reg=reg)
    steps = [events.step(t) for t in range(events.n_steps)]
    for s in steps[:5]:
        lr.step(s, 1)      # compile
    lr.reset()
    t0 = time.perf_counter()
    for t, s in enumerate(steps):
        lr.step(s, t % 10)
    learn = len(steps) / (time.perf_counter() - t0)
    lr.enabled = False
    lr.reset()
    t0 = time.perf_counter()
    for s in steps:
        lr.step(s)
    infer_py = len(steps) / (time.perf_counter() - t0)
    return learn, infer_py


# ------------------------------------------------------------------ part 3: Cortex-M4 under QEMU

BOARD = "qemu-mps2-an386"     # Cortex-M4 (mps2-an386), 4 MiB RAM
RESET, ON = 1, 2              # learn_flags bits (board/learn_main.c)
QEMU_RULES_QUICK = ("readout", "eprop", "stdp")


def parse_learn_stream(data: bytes) -> dict:
    """The learn firmware's UART stream (board/learn_main.c): 'ESNL' version init_status learn_bytes
    steps_run last_status updates ticks_learn ticks_forward calib_iters calib_ticks n_wb wb[] fnv."""
    w = np.frombuffer(data[:len(data) - len(data) % 4], "<u4").astype(np.int64)
    if w.size < 13 or int(w[0]) != 0x4C4E5345:
        raise ValueError(f"no learn stream ({len(data)} bytes)")
    n_wb = int(w[11])
    n_words = (n_wb + 1) // 2
    if w.size < 13 + n_words:
        raise ValueError(f"the learn stream is truncated ({len(data)} bytes, {n_wb} weights)")
    h = 0x811C9DC5
    for v in w[:12 + n_words]:
        h = ((h ^ int(v)) * 0x01000193) & 0xFFFFFFFF
    if int(w[12 + n_words]) != h:
        raise ValueError("the UART stream was damaged")
    packed = w[12:12 + n_words].astype(np.uint32)
    halves = np.empty(2 * n_words, np.uint16)
    halves[0::2], halves[1::2] = packed & 0xFFFF, packed >> 16

    def s32(v):
        return int(np.uint32(v).astype(np.int32))

    return {"init": s32(w[2]), "learn_bytes": int(w[3]), "done": int(w[4]), "last": s32(w[5]), "updates": int(w[6]),
            "ticks_learn": int(w[7]), "ticks_forward": int(w[8]), "calib_iters": int(w[9]),
            "calib_ticks": int(w[10]), "wb": halves[:n_wb].view(np.int16).copy()}


def python_final(model, rule, steps, labels, flags, reg):
    """The Python fixed-point Learner under the firmware's controls (reset, learning on / off per step):
    the final int16 weight pool and the update count."""
    lr = Learner(model, rule, mode="fixed", reg=reg)
    for t, s in enumerate(steps):
        f = int(flags[t])
        if f & RESET:
            lr.reset()
        lr.enabled = bool(f & ON)
        lr.step(np.asarray(s, np.int32), int(labels[t]))
    return lr.sim.program.wb.copy(), lr.updates


def qemu_missing() -> list[str]:
    from firmware_gen.build import CROSS
    return [t for t in (f"{CROSS}gcc", f"{CROSS}size", "make", os.environ.get("EDGESNN_QEMU", "qemu-system-arm"))
            if shutil.which(t) is None]


def cortex_m4(model, rule, events, reg, project):
    """One learn firmware on BOARD, exported and built in the directory ``project``: instructions per step
    with and without learning, updates, buffer bytes, and the final weights against the Python Learner's."""
    from firmware_gen import build as BUILD
    from firmware_gen import export as EXPORT
    from firmware_gen import qemu as QEMU
    T = int(events.n_steps)
    C = int(model.network.n_outputs)
    steps = [events.step(t) for t in range(T)]
    labels = [(t // 25) % C if t % 25 > 2 else -1 for t in range(T)]     # a few unlabelled steps per sample
    flags = [ON | (RESET if t % 50 == 0 else 0) for t in range(T)]
    lr0 = Learner(model, rule, reg=reg)
    EXPORT.export_project(model, BOARD, project, mode="learn",
                          learn={"learner": lr0, "events": events, "labels": labels, "flags": flags})
    t0 = time.perf_counter()
    rep = BUILD.build_project(project)
    BUILD.check_fits(rep)
    build_s = time.perf_counter() - t0
    res = QEMU.run(rep["elf"], BOARD, timeout=900, icount_shift=0)
    dev = parse_learn_stream(res.output)
    if res.returncode != 0 or dev["init"] != 0 or dev["last"] != 0 or dev["done"] != T:
        raise RuntimeError(f"{rule}: the learn firmware failed (exit {res.returncode}, init {dev['init']}, "
                           f"last {dev['last']}, {dev['done']} of {T} steps)")
    wb, updates = python_final(model, rule, steps, labels, flags, reg)
    equal = bool(np.array_equal(dev["wb"], wb)) and dev["updates"] == updates & 0xFFFFFFFF
    learned = not np.array_equal(wb, lr0.sim.program.wb)
    calib = QEMU.instructions(dev["calib_ticks"], BOARD) / (2 * dev["calib_iters"])
    per_learn = QEMU.instructions(dev["ticks_learn"], BOARD) / T
    per_fwd = QEMU.instructions(dev["ticks_forward"], BOARD) / T
    per_update = (per_learn - per_fwd) * T / dev["updates"] if dev["updates"] else None
    return {"board": BOARD, "steps": T, "instr_per_step": per_learn, "instr_forward_per_step": per_fwd,
            "instr_learning_per_step": per_learn - per_fwd, "updates": dev["updates"],
            "updates_per_step": dev["updates"] / T, "instr_per_update": per_update,
            "learn_buffer_bytes": dev["learn_bytes"], "weights_equal_python": equal, "weights_changed": learned,
            "python_updates": int(updates), "calibration": calib, "flash_bytes": rep["flash_bytes"],
            "ram_bytes": rep["ram_bytes"], "build_s": build_s, "qemu_s": res.seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    ap.add_argument("--no-qemu", action="store_true", help="skip part 3 (instructions on a Cortex-M4 under QEMU)")
    args = ap.parse_args()
    n_steps = 100 if args.quick else 1000
    q_steps = 20 if args.quick else 100
    q_rules = QEMU_RULES_QUICK if args.quick else RULES
    reg = (0.01, 0.3, 50.0, 2)
    rows = []
    qemu_note = None
    if args.no_qemu:
        qemu_note = "part 3 (Cortex-M4 under QEMU) skipped: --no-qemu"
    elif qemu_missing():
        qemu_note = (f"part 3 (Cortex-M4 under QEMU) skipped: {', '.join(qemu_missing())} not found "
                     f"(.ci/setup-toolchain.sh installs the ARM toolchain and QEMU)")
    tmp = None if qemu_note else tempfile.TemporaryDirectory(prefix="esnn-bench-learn-")
    qemu_jobs = []
    for name, make, n_in in (("nmnist 578-256-10", nmnist_net, 578), ("fsdd 32-R128alif-10", fsdd_net, 32)):
        model = quantize(make())
        rng = np.random.default_rng(1)
        dense = rng.random((n_steps, n_in)) < 0.05
        ev = Events.from_dense(dense)
        sim = Simulator.fixed(model)
        sim.run(ev)
        sim.reset()
        t0 = time.perf_counter()
        sim.run(ev)
        infer_run = n_steps / (time.perf_counter() - t0)
        for rule in RULES:
            lr = Learner(model, rule, reg=reg)
            sb = lr.state_bytes()
            row = {"network": name, "rule": rule, "state": {str(k): v for k, v in sb.items()},
                   "infer_run_steps_per_s": infer_run}
            for mode in ("fixed", "float"):
                learn, infer_py = throughput(model, rule, ev, mode, reg)
                row[f"{mode}_learn_steps_per_s"] = learn
                row[f"{mode}_infer_steps_per_s"] = infer_py
            if tmp is not None and rule in q_rules:
                qemu_jobs.append((row, make.__name__, model, rule, Events.from_dense(dense[:q_steps])))
            rows.append(row)
    for row, tag, model, rule, q_ev in qemu_jobs:    # after the host timings, so as not to disturb them
        try:
            row["cortex_m4"] = cortex_m4(model, rule, q_ev, reg, Path(tmp.name) / f"{tag}-{rule}")
        except (EdgeSNNError, ValueError, RuntimeError) as e:   # one failing firmware loses no other row
            row["cortex_m4"] = {"error": f"{type(e).__name__}: {e}"}
    if tmp is not None:
        tmp.cleanup()
    if args.json:
        print(json.dumps(rows))
        if qemu_note:
            print(qemu_note, file=sys.stderr)
        return
    print("Learning state (bytes kept between steps; rate regulariser on). per layer = feedback matrix, local "
          "readout, error, PRNG")
    print(f"{'network':<21} {'rule':<8} {'layer':>5} {'role':<8} {'/neuron':>8} {'/synapse':>9} {'/input':>7} "
          f"{'/layer':>7} {'total B':>9} {'weights B':>10}")
    for r in rows:
        for l, s in r["state"].items():
            print(f"{r['network']:<21} {r['rule']:<8} {l:>5} {s['role']:<8} {s['per_neuron']:>8} {s['per_synapse']:>9} "
                  f"{s['per_input']:>7} {s['per_layer']:>7} {s['total']:>9,} {s['weights']:>10,}")
    print()
    print(f"Host throughput, one core, {n_steps} steps of random input at 5 % (steps/s; same process)")
    print(f"{'network':<21} {'rule':<8} {'learn fixed':>12} {'learn float':>12} {'infer (step loop)':>18} "
          f"{'infer (run)':>12} {'learn/infer':>12}")
    for r in rows:
        print(f"{r['network']:<21} {r['rule']:<8} {r['fixed_learn_steps_per_s']:>12,.0f} "
              f"{r['float_learn_steps_per_s']:>12,.0f} {r['fixed_infer_steps_per_s']:>18,.0f} "
              f"{r['infer_run_steps_per_s']:>12,.0f} "
              f"{r['fixed_learn_steps_per_s'] / r['fixed_infer_steps_per_s']:>12.2f}")
    print()
    if qemu_note:
        print(qemu_note)
        return
    print(f"Cortex-M4 ({BOARD}, QEMU -icount shift=0), {q_steps} labelled steps of the same input, learning "
          f"on every step, reset every 50 (instructions per step; weights vs the Python fixed-point Learner)")
    print(f"{'network':<21} {'rule':<8} {'learn step':>11} {'forward':>9} {'learning':>10} {'updates/step':>13} "
          f"{'instr/update':>13} {'buffer B':>9} {'weights':>8}")
    for r in rows:
        c = r.get("cortex_m4")
        if c is None:
            continue
        if "error" in c:
            print(f"{r['network']:<21} {r['rule']:<8} FAILED: {c['error']}")
            continue
        ipu = f"{c['instr_per_update']:>13.1f}" if c["instr_per_update"] is not None else f"{'-':>13}"
        print(f"{r['network']:<21} {r['rule']:<8} {c['instr_per_step']:>11,.0f} {c['instr_forward_per_step']:>9,.0f} "
              f"{c['instr_learning_per_step']:>10,.0f} {c['updates_per_step']:>13,.0f} {ipu} "
              f"{c['learn_buffer_bytes']:>9,} {'equal' if c['weights_equal_python'] else 'DIFFER':>8}")


if __name__ == "__main__":
    main()
