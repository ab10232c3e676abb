"""Learning costs: python benchmarks/learning.py [--json] [--quick]

1. bytes of learning state per neuron, per synapse, per input and per layer for each rule (docs/learning.md,
   "State per rule"), for the N-MNIST-sized network (578 inputs -> Dense 256 LIF -> Dense 10 LI, both
   plastic) and the FSDD e-prop network (32 inputs -> Recurrent 128 ALIF -> Dense 10 LI);
2. host throughput, one core, same process: learning steps/s (forward + update, fixed point and float twin)
   against inference-only steps/s (the same Simulator.step loop with learning off, and the compiled
   Simulator.run loop), on random input at 5 % activity.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    args = ap.parse_args()
    n_steps = 100 if args.quick else 1000
    reg = (0.01, 0.3, 50.0, 2)
    rows = []
    for name, make, n_in in (("nmnist 578-256-10", nmnist_net, 578), ("fsdd 32-R128alif-10", fsdd_net, 32)):
        model = quantize(make())
        rng = np.random.default_rng(1)
        ev = Events.from_dense(rng.random((n_steps, n_in)) < 0.05)
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
            rows.append(row)
    if args.json:
        print(json.dumps(rows))
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


if __name__ == "__main__":
    main()
