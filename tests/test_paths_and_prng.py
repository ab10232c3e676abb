"""Streaming, many-steps and batched execution agree exactly and are deterministic; the PRNG is the
published xoshiro128**."""
import numpy as np
import pytest

from edgesnn.errors import InputError
from edgesnn.kernels import layout as K
from edgesnn.kernels import network as kn
from edgesnn.kernels.prng import PyPrng, next_u32, seed_state
from edgesnn.model.quantize import quantize
from edgesnn.simulator import Events, Simulator

from netgen import random_events, random_network


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fixed", [True, False])
def test_stream_fused_batch_identical(seed, fixed):
    net = random_network(seed)
    make = (lambda: Simulator.fixed(quantize(net))) if fixed else (lambda: Simulator.float(net))
    samples = [Events.from_lists(random_events(seed * 10 + b, net.n_inputs, 30)) for b in range(3)]
    fused = []
    for ev in samples:
        sim = make()
        fused.append(sim.run(ev, record="all"))
        again = make().run(ev, record="all")  # deterministic across runs
        assert np.array_equal(again.state, fused[-1].state) and np.array_equal(again.spikes, fused[-1].spikes)
    sim = make()
    for t in range(30):
        out = sim.step(samples[1].step(t))
        assert out.tolist() == np.flatnonzero(fused[1].out_spikes[t]).tolist(), f"stream differs at step {t}"
        assert np.array_equal(sim.vs, fused[1].state[t])
    spk, v = make().run_batch(samples)
    for b in range(3):
        assert np.array_equal(spk[b], fused[b].out_spikes)
        assert np.array_equal(v[b], fused[b].out_v)


def test_stream_step_follows_the_arrays_in_place():
    """The streaming step reaches the program and state by address: changes made in place (a learner's
    weights, a reset) are what it runs on, and the state arrays cannot be rebound behind its back."""
    net = random_network(4, conv=False)
    a, b = Simulator.fixed(quantize(net)), Simulator.fixed(quantize(net))
    steps = random_events(4, net.n_inputs, 12)
    for p in (a.program, b.program):
        p.wa[:] = np.clip(p.wa.astype(np.int16) * 2, -127, 127)          # in place, after the set-up
    b.run(Events.from_lists(steps[:5]))
    b.reset()
    for t, idx in enumerate(steps):
        assert a.step(idx).tolist() == b.step(idx).tolist()
    ref = Simulator.fixed(quantize(net))
    ref.program.wa[:] = a.program.wa
    assert np.array_equal(ref.run(Events.from_lists(steps), record="all").state[-1], a.vs)
    with pytest.raises(AttributeError):
        a.vs = np.zeros_like(a.vs)
    with pytest.raises(AttributeError):
        a.ist = np.zeros_like(a.ist)


@pytest.mark.parametrize("fixed", [True, False])
def test_stream_step_takes_any_index_input_without_compiling(fixed):
    """The compiled streaming step takes int32 C-contiguous writable arrays only and compiles nothing else:
    any other input (a list, a tuple, another dtype, a strided or read-only array, a scalar) is converted,
    and steps the same."""
    from edgesnn.kernels import network as kn
    net = random_network(5, conv=False)
    make = (lambda: Simulator.fixed(quantize(net))) if fixed else (lambda: Simulator.float(net))
    a, b = make(), make()
    step_at = kn.step_fixed_at if fixed else kn.step_float_at
    ro = np.zeros(0, np.int32)
    ro.flags.writeable = False
    for t, idx in enumerate(random_events(5, net.n_inputs, 40)):
        x = np.asarray(idx, np.int32)
        other = [list(idx), tuple(idx), x.astype(np.int64), np.repeat(x, 2)[::2], x.astype(np.uint16),
                 np.frombuffer(x.tobytes(), np.int32), np.array(idx, dtype=object)][t % 7]
        assert b.step(other).tolist() == a.step(x).tolist(), t
        assert np.array_equal(a.vs, b.vs) and np.array_equal(a.ist, b.ist)
        if len(x):
            assert a.step(x[:1]).tolist() == b.step(int(x[0])).tolist()
        assert a.step(ro).tolist() == b.step(np.array([], np.float64)).tolist()
    assert len(step_at.signatures) == 1
    with pytest.raises(InputError, match="1-D"):
        a.step(np.zeros((2, 2), np.int32))
    with pytest.raises(InputError):
        a.step([net.n_inputs])


def test_stream_step_without_output_spikes_returns_an_empty_read_only_array():
    net = random_network(6, conv=False)
    sim = Simulator.fixed(quantize(net))
    out = sim.step([])
    assert out.dtype == np.int32 and out.size == 0 and not out.flags.writeable


def test_dense_step_equals_index_step():
    net = random_network(2, conv=True)
    steps = random_events(2, net.n_inputs, 20)
    a, b = Simulator.fixed(quantize(net)), Simulator.fixed(quantize(net))
    dense = Events.from_lists(steps).to_dense(net.n_inputs)
    for t, idx in enumerate(steps):
        assert a.step(idx).tolist() == b.step_dense(dense[t]).tolist()
        assert np.array_equal(a.vs, b.vs)
    assert b.step_dense(np.ones(net.n_inputs, bool)).tolist() == a.step(np.arange(net.n_inputs)).tolist()
    with pytest.raises(InputError, match=f"needs {net.n_inputs} values"):
        b.step_dense(np.ones(3))


def test_run_continues_from_current_state():
    net = random_network(3)
    ev = Events.from_lists(random_events(3, net.n_inputs, 40))
    whole = Simulator.fixed(quantize(net)).run(ev, record="all")
    sim = Simulator.fixed(quantize(net))
    first = sim.run(Events.from_lists([ev.step(t).tolist() for t in range(15)]), record="all")
    second = sim.run(Events.from_lists([ev.step(t).tolist() for t in range(15, 40)]), record="all")
    assert np.array_equal(np.vstack([first.state, second.state]), whole.state)
    assert sim.steps == 40


def test_bad_input_is_refused_without_touching_state():
    net = random_network(4)
    sim = Simulator.fixed(quantize(net))
    sim.step([0, 1])
    before = (sim.vs.copy(), sim.ist.copy())
    with pytest.raises(InputError, match=rf"input index {net.n_inputs} .*\(0..{net.n_inputs - 1}\) at step 1; the step was not applied"):
        sim.step([0, net.n_inputs])
    with pytest.raises(InputError, match="input index -1"):
        sim.step([-1])
    assert np.array_equal(sim.vs, before[0]) and np.array_equal(sim.ist, before[1])
    with pytest.raises(InputError, match=r"at step 2 of the run \(steps before it were applied\)"):
        sim.run(Events.from_lists([[0], [1], [net.n_inputs + 5]]))
    with pytest.raises(InputError, match="sample 1"):
        sim.run_batch([Events.from_lists([[0]]), Events.from_lists([[10**6]])])
    with pytest.raises(InputError, match="at most 65535"):
        sim.step(np.zeros(70000, np.int32))
    with pytest.raises(InputError, match="same number of steps"):
        sim.run_batch([Events.from_lists([[0]]), Events.from_lists([[0], [1]])])


def _kernel_run(sim, idx, ptr):
    """kn.run_steps on raw (ev_idx, ev_ptr): (status, steps done, whole state per step)."""
    p = sim.program
    rec = np.zeros((len(ptr) - 1, p.n_vs), sim.vs.dtype)
    out = np.zeros((0, sim.n_outputs), np.int8)
    status, done = kn.run_steps(p.ltab, p.ptab, p.wa, p.wb, sim.vs, sim.ist, np.asarray(idx, np.int32),
                                np.asarray(ptr, np.int64), out, np.zeros((0, sim.n_outputs), sim.vs.dtype),
                                np.zeros((0, 1), np.int8), rec)
    return status, done, rec


@pytest.mark.parametrize("fixed", [True, False])
def test_many_steps_check_the_input_like_single_steps(fixed):
    """The many-steps and batched paths check a whole run's events at once (kn.valid_steps), not each step
    apart; what they refuse, where they stop and what they leave must stay what streaming step by step
    gives: the steps before the first refused one applied, that one and the rest not. Also for steps
    that do not follow each other in the event array (overlapping, out of order, negative counts, events
    that no step uses), which the one-pass check does not cover."""
    net = random_network(6, conv=False)
    make = (lambda: Simulator.fixed(quantize(net))) if fixed else (lambda: Simulator.float(net))
    n_in = net.n_inputs
    steps = random_events(6, n_in, 12)
    limit = int(kn.max_events(make().program.ltab))
    bad_steps = {"index too high": [0, n_in], "index negative": [-1, 2], "too many events": [0] * (limit + 1)}
    for why, bad in bad_steps.items():
        for t_bad in (0, 5, 11):
            run = steps[:t_bad] + [bad] + steps[t_bad + 1:]
            ev = Events.from_lists(run)
            sim = make()
            status, done, rec = _kernel_run(sim, ev.idx, ev.ptr)
            want = K.ERR_INPUT_COUNT if why == "too many events" else K.ERR_INPUT_INDEX
            assert (status, done) == (want, t_bad), why
            ref = make()
            for t in range(t_bad):
                ref.step(steps[t])
                assert np.array_equal(rec[t], ref.vs), (why, t)
            assert np.array_equal(sim.vs, ref.vs) and np.array_equal(sim.ist, ref.ist), why
            samples = [Events.from_lists(steps), ev, Events.from_lists(steps[::-1])]
            with pytest.raises(InputError, match="sample 1 of the batch"):
                make().run_batch(samples)

    # steps as slices of one event array that do not follow each other; bad events at its end
    idx = np.concatenate([np.asarray(s, np.int64) for s in steps] + [np.array([n_in + 3, -4])]).astype(np.int32)
    starts = np.cumsum([0] + [len(s) for s in steps])
    # step t runs idx[ptr[t]:ptr[t + 1]]: a negative count (an empty step, as it is for a single step),
    # the events of steps 2-6, an empty step, a negative count, then those of steps 1-2 (earlier in the
    # array and overlapping the second step)
    ptr = np.array([starts[4], starts[2], starts[7], starts[7], starts[1], starts[3]], np.int64)
    assert starts[1] < starts[2] < starts[4] < starts[7]
    sim = make()
    status, done, rec = _kernel_run(sim, idx, ptr)
    ref = make()
    for t in range(len(ptr) - 1):
        ref.step(idx[ptr[t]:max(ptr[t], ptr[t + 1])])
        assert np.array_equal(rec[t], ref.vs), t
    assert (status, done) == (K.OK, len(ptr) - 1)
    # the unused bad events after the last step are never looked at; a step that reaches them is refused
    for ptr_bad, t_bad in (([0, starts[1], len(idx)], 1),
                           ([starts[1], starts[2], len(idx) - 2, len(idx), starts[1], starts[2]], 2)):
        sim = make()
        status, done, _ = _kernel_run(sim, idx, ptr_bad)
        assert (status, done) == (K.ERR_INPUT_INDEX, t_bad), ptr_bad


def test_events_roundtrip_and_validation():
    x = np.array([[0, 2, 1], [0, 0, 0], [1, 1, 1]])
    ev = Events.from_dense(x)
    assert ev.step(0).tolist() == [1, 1, 2] and ev.step(1).tolist() == [] and ev.n_steps == 3
    assert np.array_equal(ev.to_dense(3), x)
    with pytest.raises(InputError):
        Events(np.array([1, 2], np.int32), np.array([0, 3]))
    with pytest.raises(InputError, match="negative"):
        Events.from_dense(-x)


def test_xoshiro128starstar_reference_vector():
    s = np.array([1, 2, 3, 4], np.uint32)
    out = [int(next_u32(s)) for _ in range(10)]
    assert out == [11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849,
                   3729100597, 4258142804]


def test_prng_numba_equals_python_and_streams_differ():
    for seed, stream in ((0, 0), (42, 1), (2**32 - 1, 7)):
        s, p = seed_state(seed, stream), PyPrng(seed, stream)
        assert [int(next_u32(s)) for _ in range(200)] == [p.next_u32() for _ in range(200)]
    a = [int(next_u32(seed_state(1, 0))) for _ in range(1)]
    b = [int(next_u32(seed_state(1, 1))) for _ in range(1)]
    assert a != b
