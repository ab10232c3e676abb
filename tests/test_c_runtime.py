"""The C runtime (firmware_gen) equals the emulator at every step: spikes of every layer and the whole
numeric state, on random networks of every kind, at the edges, on the presets, through both the weight
blob and the generated arrays; bad input, bad state and damaged blobs are refused with the right status;
the sanitizer build runs clean; the runtime compiles with -Werror for a Cortex-M4F and a Cortex-M0+.

Tests that need gcc (or arm-none-eabi-gcc) skip when it is missing, and fail instead when
EDGESNN_REQUIRE_TOOLCHAIN=1.
"""
import ctypes
import math
import os
import re
import struct
import subprocess
import zlib

import numpy as np
import pytest
from conftest import ARM_CPUS, ARM_FLAGS, need
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesnn.errors import InputError
from edgesnn.kernels import layout as K
from edgesnn.kernels.arith import decay_py, q24_multiplier
from edgesnn.model.modelfile import model_hash
from edgesnn.model.program import MAX_EVENTS_PER_STEP, build_fixed
from edgesnn.model.quantize import quantize
from edgesnn.model.spec import Conv2d, Dense, Flatten, Network, Neuron, Recurrent, SumPool2d
from edgesnn.simulator import Events, Simulator
from firmware_gen import blob as B
from firmware_gen import codegen, hostlib
from firmware_gen import status as S
from firmware_gen.hostlib import DeviceStatusError, HostDevice

from netgen import random_events, random_network

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
HEADER = codegen.RUNTIME_DIR / "edgesnn.h"


@pytest.fixture(scope="module")
def gcc():
    need(os.environ.get("EDGESNN_CC", "gcc"))


# ------------------------------------------------------------------ helpers

def emulate(model, steps, v0=None):
    sim = Simulator.fixed(model)
    if v0 is not None:
        for layer, values in v0.items():
            sim.v(layer)[:] = values
    return sim.run(Events.from_lists(steps) if not isinstance(steps, Events) else steps, record="all"), sim


def assert_same(rec, got, what=""):
    """Every layer's spikes and every v, i, a at every step; the first difference is named."""
    assert got.spikes.shape == rec.spikes.shape and got.state.shape == rec.state.shape, what
    for t in range(rec.spikes.shape[0]):
        if not np.array_equal(rec.spikes[t], got.spikes[t]):
            diff = np.flatnonzero(rec.spikes[t] != got.spikes[t])
            pytest.fail(f"{what}: spikes differ at step {t}, flat neuron indices {diff[:10].tolist()}")
        if not np.array_equal(rec.state[t], got.state[t]):
            k = int(np.flatnonzero(rec.state[t] != got.state[t])[0])
            pytest.fail(f"{what}: state word {k} differs at step {t}: emulator {rec.state[t, k]}, "
                        f"C {got.state[t, k]}")
    assert np.array_equal(rec.out_spikes, got.out_spikes) and np.array_equal(rec.out_v, got.out_v), what


def check(model, steps, source="blob", defines=(), v0=None, what=""):
    """Run the emulator and the C; compare every step and the final int32 state (refractory counters,
    spike lists, counts)."""
    rec, sim = emulate(model, steps, v0)
    dev = HostDevice(model, source=source, defines=defines)
    if v0 is not None:
        for layer, values in v0.items():
            dev.v(layer)[:] = values
    got = dev.run(Events.from_lists(steps) if not isinstance(steps, Events) else steps)
    assert_same(rec, got, what or source)
    assert np.array_equal(sim.ist, dev.ist), f"{what}: final refractory counters / spike lists differ"
    return rec


def small_model():
    """Two layers, both weight pools, refractory, recurrence: small enough to corrupt byte by byte."""
    rng = np.random.default_rng(1)
    net = Network((3,), [
        Recurrent(rng.normal(0, 1, (4, 3)), rng.normal(0, 0.5, (4, 4)),
                  Neuron("lif", threshold=0.8, refractory=2e-3), plastic=True),
        Dense(rng.normal(0, 1, (2, 4)), Neuron("alif", threshold=0.5)),
    ])
    return quantize(net)


def conv_model():
    rng = np.random.default_rng(2)
    lif = Neuron("lif", threshold=0.5)
    net = Network((1, 4, 4), [
        Conv2d(rng.normal(0, 1, (2, 1, 3, 3)), stride=1, padding=1, neuron=lif),
        SumPool2d(2, weight=0.5, neuron=lif),
        Flatten(),
        Dense(rng.normal(0, 1, (3, 8)), Neuron("li")),
    ])
    return quantize(net)


# ------------------------------------------------------------------ no compiler needed

def _header_defines() -> dict:
    out = {}
    for name, value in re.findall(r"^#define (ESNN_\w+) \(?(-?\d+)u?\)?", HEADER.read_text(), re.M):
        out[name] = int(value)
    return out


def test_header_numbers_equal_layout_and_status():
    d = _header_defines()
    for i, name in enumerate(K.LTAB_NAMES):
        assert d[f"ESNN_L_{name.upper()}"] == i, name
    for i, name in enumerate(K.PTAB_NAMES):
        assert d[f"ESNN_P_{name.upper()}"] == i, name
    assert (d["ESNN_NL"], d["ESNN_NP"]) == (K.NL, K.NP)
    for name, code in K.LAYER_CODES.items():
        assert d[f"ESNN_{name.upper()}"] == code
    for name, code in K.NEURON_CODES.items():
        assert d[f"ESNN_{name.upper()}"] == code
    assert d["ESNN_NONE"] == K.NONE
    assert (d["ESNN_RESET_SUBTRACT"], d["ESNN_RESET_ZERO"]) == (K.RESET_SUBTRACT, K.RESET_ZERO)
    for code, name in S.NAMES.items():
        assert d[f"ESNN_{name}"] == code, name
    assert d["ESNN_MAX_EVENTS"] == MAX_EVENTS_PER_STEP
    assert (d["ESNN_BLOB_VERSION"], d["ESNN_BLOB_HEADER_BYTES"], d["ESNN_BLOB_ALIGN"]) == \
        (B.VERSION, B.HEADER_BYTES, B.ALIGN)
    assert f'#define ESNN_BLOB_MAGIC "{B.MAGIC.decode()}"' in HEADER.read_text()


def test_blob_layout_round_trips():
    model = small_model()
    data = B.pack(model)
    t = B.tables(model)
    at = B.layout(t.n_layers, t.wa.size, t.wb.size)
    assert len(data) == at["total"] and all(at[s] % B.ALIGN == 0 for s in ("ltab", "ptab", "wa", "wb"))
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])
    back = B.unpack(data)
    p = build_fixed(model)
    assert np.array_equal(back.ltab, p.ltab) and np.array_equal(back.ptab, p.ptab)
    assert np.array_equal(back.wa, p.wa) and np.array_equal(back.wb, p.wb)
    assert (back.n_vs, back.n_ist, back.hash) == (p.n_vs, p.n_ist, bytes.fromhex(model_hash(model)))


# ------------------------------------------------------------------ arithmetic

@pytest.mark.parametrize("defines", [(), ("ESNN_DECAY_32BIT=1",)], ids=["q24-64bit", "q24-32bit"])
def test_decay_and_saturation_follow_the_contract(gcc, defines):
    lib = hostlib.runtime_lib(defines)
    rng = np.random.default_rng(0)
    edges = [0, 1, -1, 2, -2, 4095, -4096, 2**24, -(2**24), 2**30, I32_MAX, I32_MIN, I32_MIN + 1, I32_MAX - 1]
    xs = np.array(edges + rng.integers(I32_MIN, I32_MAX, 3000, endpoint=True).tolist(), np.int64)
    cases = [(d, 0) for d in (0, 1, 2, 2048, 3686, 4095, 4096)] + [(k, 1) for k in range(25)]
    for d, form in cases:
        q = q24_multiplier(d, form)
        got = np.zeros(xs.size, np.int32)
        lib.esnn_host_decay_many(xs.astype(np.int32), np.full(xs.size, q, np.uint32), got, xs.size)
        want = [decay_py(int(x), d, form) for x in xs]
        assert got.tolist() == want, f"decay, form {form}, constant {d}"
    # any Q24 multiplier, not only those of the two forms: sign(x) * ((|x| * D) >> 24)
    qs = rng.integers(0, 2**24, xs.size, endpoint=True).astype(np.uint32)
    got = np.zeros(xs.size, np.int32)
    lib.esnn_host_decay_many(xs.astype(np.int32), qs, got, xs.size)
    want = [(1 if x >= 0 else -1) * ((abs(int(x)) * int(q)) >> 24) for x, q in zip(xs, qs)]
    assert got.tolist() == want
    a = rng.integers(I32_MIN, I32_MAX, 4000, endpoint=True).astype(np.int32)
    b = rng.integers(I32_MIN, I32_MAX, 4000, endpoint=True).astype(np.int32)
    a[:4], b[:4] = [I32_MAX, I32_MIN, I32_MAX, I32_MIN], [1, -1, I32_MIN, I32_MAX]
    got = np.zeros(a.size, np.int32)
    lib.esnn_host_sat_add_many(a, b, got, a.size)
    assert got.tolist() == [max(I32_MIN, min(I32_MAX, int(x) + int(y))) for x, y in zip(a, b)]


def test_crc32_equals_zlib(gcc):
    lib = hostlib.runtime_lib()
    rng = np.random.default_rng(3)
    for n in (0, 1, 3, 4, 100, 4097):
        data = rng.integers(0, 256, n).astype(np.uint8)
        assert lib.esnn_crc32(data, n) == zlib.crc32(data.tobytes())


# ------------------------------------------------------------------ equal to the emulator

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_random_networks_equal_emulator(gcc, seed):
    net = random_network(seed)
    check(quantize(net), random_events(seed, net.n_inputs, 30), what=f"seed {seed}")


# The runtime's compile-time variants; on the host the packed-SIMD rows run an emulation of SXTAB16.
VARIANTS = {
    "simd": ("ESNN_SIMD=1",),                        # the Cortex-M4/M7/M33 int8 rows
    "decay32": ("ESNN_DECAY_32BIT=1",),              # the Cortex-M0+ decay (no 64-bit multiply)
    "simd+decay32": ("ESNN_SIMD=1", "ESNN_DECAY_32BIT=1"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("seed", range(8))
def test_runtime_variants_equal_emulator(gcc, variant, seed):
    net = random_network(1000 + seed)
    check(quantize(net), random_events(seed, net.n_inputs, 30), defines=VARIANTS[variant])


def _every_kind_network(kind, form, reset, refractory, plastic, conv):
    """conv -> pool -> flatten (optional) -> recurrent -> dense -> LI readout, every spiking layer with
    the same neuron settings."""
    rng = np.random.default_rng(zlib.crc32(repr((kind, form, reset, refractory, plastic, conv)).encode()))

    def nrn(k=kind):
        return Neuron(k, tau_mem=5e-3, threshold=0.6, reset=reset, refractory=refractory, tau_syn=3e-3,
                      tau_adapt=20e-3, adapt_step=0.3, decay_form=form)

    shape, layers = (9,), []
    if conv:
        shape = (2, 6, 6)
        layers = [Conv2d(rng.normal(0.3, 0.7, (3, 2, 3, 3)), stride=2, padding=1, neuron=nrn(), plastic=plastic),
                  SumPool2d(2, stride=1, weight=0.7, neuron=nrn()), Flatten()]
    width = shape
    for layer in layers:
        width = layer.out_shape(width)
    n_in = int(np.prod(width))
    layers += [Recurrent(rng.normal(0.2, 0.8, (10, n_in)), rng.normal(0, 0.5, (10, 10)), nrn(), plastic=plastic),
               Dense(rng.normal(0.1, 0.8, (5, 10)), nrn(), plastic=plastic),
               Dense(rng.normal(0, 0.8, (3, 5)), nrn("li"))]
    return Network(shape, layers)


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
@pytest.mark.parametrize("plastic", [False, True], ids=["int8", "int16"])
@pytest.mark.parametrize("refractory", [0.0, 2e-3], ids=["norefr", "refr"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("form", ["multiply", "shift"])
@pytest.mark.parametrize("kind", ["lif", "if", "cuba", "alif"])
def test_every_neuron_and_layer_kind(gcc, kind, form, reset, refractory, plastic, conv):
    net = _every_kind_network(kind, form, reset, refractory, plastic, conv)
    steps = random_events(7, net.n_inputs, 25, rate=0.4)
    rec = check(quantize(net), steps)
    assert rec.spikes[:, :-3].any(), "a network that never spikes would prove little"


@pytest.mark.parametrize("conv", [True, False])
@pytest.mark.parametrize("readout", [True, False])
def test_generated_arrays_equal_blob_and_emulator(gcc, conv, readout):
    net = random_network(200 + 2 * conv + readout, conv=conv, readout=readout)
    model = quantize(net)
    steps = random_events(11, net.n_inputs, 30)
    rec = check(model, steps, source="arrays")
    blob = check(model, steps, source="blob")
    assert np.array_equal(rec.state, blob.state)
    lib = hostlib.model_lib(model)
    data = B.pack(model)
    gen_blob = (np.ctypeslib.as_array((ctypes.c_uint8 * len(data)).in_dll(lib, "esnn_model_blob")))
    assert gen_blob.tobytes() == data, "the generated blob array differs from blob.pack"
    gen_hash = np.ctypeslib.as_array((ctypes.c_uint8 * 32).in_dll(lib, "esnn_model_hash"))
    assert gen_hash.tobytes().hex() == model_hash(model)
    header = codegen.generate(model)["model_data.h"]
    words = int(re.search(r"#define ESNN_MODEL_STATE_WORDS (\d+)u", header).group(1))
    model_ptr = ctypes.addressof(ctypes.c_uint8.in_dll(lib, "esnn_model"))
    assert 4 * words == lib.esnn_state_bytes(model_ptr)


# ------------------------------------------------------------------ edges

def test_empty_all_active_and_repeated_input(gcc):
    for seed, conv in ((5, True), (6, False)):
        net = random_network(seed, conv=conv)
        n = net.n_inputs
        steps = [[]] * 3 + [list(range(n))] * 4 + [[]] * 2 + [sorted(list(range(n)) * 3)] * 3 + [[0] * 50, []]
        check(quantize(net), steps)


@pytest.mark.parametrize("variant", ["default"] + sorted(VARIANTS))
def test_most_events_a_step_takes(gcc, variant):
    """65535 events: many 256-row partial sums, and rows of every width (the SIMD tail included)."""
    for seed in (8, 9):
        net = random_network(seed, conv=False)
        n = net.n_inputs
        big = (np.arange(MAX_EVENTS_PER_STEP) % n).tolist()
        check(quantize(net), [big, [], big[:1000], big[:257], big[:255], big], defines=VARIANTS.get(variant, ()))


@pytest.mark.parametrize("sign", [1, -1])
def test_membrane_saturates_like_emulator(gcc, sign):
    net = Network((200,), [Dense(np.full((3, 200), float(sign)), Neuron("if", threshold=1.0)),
                           Dense(np.ones((2, 3)), Neuron("li", tau_mem=1.0))])
    model = quantize(net)
    model.layers[0].weight[:] = 127 * sign
    model.layers[0].theta = I32_MAX   # only a saturated membrane reaches it
    start = (I32_MAX if sign > 0 else I32_MIN) - sign * 100_000
    rec = check(model, [list(range(200))] * 6, v0={0: [start] * 3})
    if sign < 0:
        assert rec.state[:, 0].min() == I32_MIN
    else:
        assert rec.spikes[:, 0].any()


def test_current_adaptation_and_int16_saturate_like_emulator(gcc):
    """int16 weights at full scale into CUBA currents and ALIF thresholds near the int32 limits, where
    theta + a leaves int32 (it is compared in 64 bits)."""
    net = Network((50,), [
        Dense(np.ones((4, 50)), Neuron("cuba", tau_mem=1.0, tau_syn=1.0, threshold=1.0), plastic=True),
        Dense(np.ones((3, 4)), Neuron("alif", tau_mem=math.inf, threshold=1.0, tau_adapt=1.0, adapt_step=1.0)),
        Dense(np.ones((2, 3)), Neuron("li", tau_mem=1.0)),
    ])
    model = quantize(net)
    model.layers[0].weight[:2] = 32767
    model.layers[0].weight[2:] = -32767
    model.layers[0].theta = I32_MAX
    model.layers[1].theta = I32_MAX - 10
    model.layers[1].a_inc = I32_MAX // 3
    model.layers[1].weight[:] = 127
    steps = [list(range(50)) * 1300] * 8 + [[]] * 3 + [list(range(50)) * 1300] * 4
    rec = check(model, steps, v0={1: [I32_MAX - 300] * 3})
    assert (rec.state == I32_MAX).any() and (rec.state == I32_MIN).any()
    a_off = build_fixed(model).ltab[1, K.L_A_OFF]
    assert rec.state[:, a_off].max() > 10, "theta + a should have left int32"


def test_int16_recurrent_first_layer_event_limit_matches_emulator(gcc):
    """An int16 recurrent first layer adds its own previous spikes to the step's events: at most
    65535 - n_out events keep every sum within int32 (docs/numerics.md). Both sides run that many at
    full weight and refuse one more, leaving the state as it was."""
    net = Network((1,), [Recurrent(np.ones((4, 1)), np.ones((4, 4)), Neuron("if", threshold=1.0), plastic=True),
                         Dense(np.ones((2, 4)), Neuron("li"))])
    model = quantize(net)
    model.layers[0].weight[:] = 32767
    model.layers[0].weight_rec[:] = 32767
    model.layers[0].theta = 2**30
    limit = MAX_EVENTS_PER_STEP - 4
    rec = check(model, [[0] * limit] * 3)
    assert rec.spikes[:, :4].all(), "every step at the limit fires all four neurons"
    dev = HostDevice(model)
    dev.run([[0] * limit])
    before = dev.buffer[:dev.n_vs + dev.n_ist].copy()
    assert dev.step_status([0] * (limit + 1)) == S.ERR_INPUT_COUNT
    assert np.array_equal(before, dev.buffer[:dev.n_vs + dev.n_ist])
    sim = Simulator.fixed(model)
    with pytest.raises(InputError, match=f"{limit + 1} input events at step 0.*at most {limit} fit one step"):
        sim.step(np.zeros(limit + 1, np.int32))
    assert not sim.vs.any()


def test_first_flatten_layer_refuses_more_events_than_it_holds(gcc):
    """A first Flatten layer keeps its input events as its spike list (n_out slots); with repeated
    indices a step can carry more. The C refuses such a step (ERR_INPUT_COUNT) and leaves the state;
    up to n_out events it equals the emulator."""
    rng = np.random.default_rng(4)
    net = Network((2, 3, 3), [Flatten(), Dense(rng.normal(0, 1, (4, 18)), Neuron("lif", threshold=0.5))])
    model = quantize(net)
    steps = [list(range(18)), [0] * 18, [], [3, 3, 5]]
    check(model, steps)
    dev = HostDevice(model)
    dev.run(steps)
    before = dev.buffer[:dev.n_vs + dev.n_ist].copy()
    assert dev.step_status([1] * 19) == S.ERR_INPUT_COUNT
    assert np.array_equal(before, dev.buffer[:dev.n_vs + dev.n_ist])
    with pytest.raises(InputError, match="19 input events .* at most 18 fit one step"):
        Simulator.fixed(model).step([1] * 19)


def test_input_of_rank_four(gcc):
    """Dense layers use only n_in: the (c, h, w) fields of a rank-4 input (the last three sizes) do not
    multiply to it, and the device runs the model all the same."""
    rng = np.random.default_rng(6)
    net = Network((2, 2, 2, 3), [Dense(rng.normal(0, 1, (5, 24)), Neuron("lif", threshold=0.5)),
                                 Dense(rng.normal(0, 1, (2, 5)), Neuron("li"))])
    check(quantize(net), random_events(6, 24, 20))


@pytest.mark.parametrize("name", ["w1", "w2", "dvs-conv", "kws"])
def test_presets_equal_emulator(gcc, name):
    presets = pytest.importorskip("edgesnn.model.presets")
    net = presets.make(name, seed=3)
    model = quantize(net)
    rng = np.random.default_rng(5)
    x = (rng.random((40, net.n_inputs)) < 0.05).astype(np.int64)
    x[10] = 1          # every input
    x[11] = 0          # none
    x[12] *= 2         # repeats
    steps = Events.from_dense(x)
    rec = check(model, steps)
    assert rec.spikes.any()
    check(model, steps, source="arrays")   # w1: a million weights as C arrays


# ------------------------------------------------------------------ refusals

def test_bad_index_is_refused_and_state_untouched(gcc):
    net = random_network(21)
    model = quantize(net)
    n = net.n_inputs
    steps = random_events(21, n, 12)
    dev = HostDevice(model)
    dev.run(steps[:6])
    before = dev.buffer[:dev.n_vs + dev.n_ist].copy()
    for bad in ([0, n], [-1], [I32_MAX], [I32_MIN, 0], [0] * 5 + [n + 3]):
        assert dev.step_status(bad) == S.ERR_INPUT_INDEX, bad
    assert dev.step_status([0] * (MAX_EVENTS_PER_STEP + 1)) == S.ERR_INPUT_COUNT
    assert np.array_equal(before, dev.buffer[:dev.n_vs + dev.n_ist]), "a refused step changed the state"
    got = dev.run(steps[6:])
    rec, _ = emulate(model, steps)
    assert np.array_equal(got.state, rec.state[6:]) and np.array_equal(got.spikes, rec.spikes[6:])
    dev.reset()
    with pytest.raises(DeviceStatusError) as e:
        dev.run([[0], [1], [n]])
    assert e.value.status == S.ERR_INPUT_INDEX and dev.steps == 2


def test_corrupted_state_is_refused(gcc):
    model = small_model()
    dev = HostDevice(model)
    dev.run([[0, 1, 2]] * 3)
    cnt_off = dev.n_ist - dev.n_layers
    for value in (dev.sizes[0] + 1, -1):
        dev.ist[cnt_off] = value
        before = dev.buffer[:dev.n_vs + dev.n_ist].copy()
        assert dev.step_status([0]) == S.ERR_STATE
        assert np.array_equal(before, dev.buffer[:dev.n_vs + dev.n_ist])
    dev.ist[cnt_off] = 1
    s_off = int(dev.tables.ltab[0, K.L_S_OFF])
    dev.ist[s_off] = dev.sizes[0]   # a spike index outside the layer
    assert dev.step_status([0]) == S.ERR_STATE
    dev.reset()
    assert dev.step_status([0]) == S.OK


def test_api_arguments(gcc):
    model = small_model()
    dev = HostDevice(model)
    other = HostDevice(model)
    lib, m, s = dev.lib, dev.model, dev.state
    ev = np.array([0], np.int32)
    assert lib.esnn_step(None, s, ev.ctypes.data, 1) == S.ERR_ARG
    assert lib.esnn_step(m, None, ev.ctypes.data, 1) == S.ERR_ARG
    assert lib.esnn_step(m, s, None, 1) == S.ERR_ARG
    assert lib.esnn_step(m, s, None, 0) == S.OK
    assert lib.esnn_step(other.model, s, ev.ctypes.data, 1) == S.ERR_ARG, "a state of another model"
    buf = np.zeros(dev.state_bytes // 4, np.int32)
    state = np.zeros(8, np.uint64)
    assert lib.esnn_state_init(m, state.ctypes.data, buf.ctypes.data, dev.state_bytes - 1) == S.ERR_ARG
    assert lib.esnn_state_init(m, state.ctypes.data, None, dev.state_bytes) == S.ERR_ARG
    assert lib.esnn_state_init(m, state.ctypes.data, buf.ctypes.data, dev.state_bytes) == S.OK
    assert dev.state_bytes == 4 * dev.tables.state_words
    assert lib.esnn_layer_size(m, 7) == 0 and lib.esnn_layer_size(m, 0xFFFFFFFF) == 2
    assert lib.esnn_n_inputs(m) == 3 and lib.esnn_n_outputs(m) == 2
    assert lib.esnn_v(m, s, 2) is None and lib.esnn_i(m, s, 0) is None and lib.esnn_a(m, s, 0) is None
    assert dev.a(1) is not None and dev.v(-1) is not None
    count = ctypes.c_uint32(5)
    assert lib.esnn_spikes(m, s, 9, ctypes.byref(count)) is None and count.value == 0
    for code in S.NAMES:
        assert lib.esnn_status_str(code) not in (None, b"unknown status")
    fl = HostDevice(conv_model())
    assert fl.v(2) is None and fl.lib.esnn_v(fl.model, fl.state, 2) is None   # Flatten has no neurons
    for _ in range(3):
        fl.step(list(range(16)))
        assert fl.spikes(2).tolist() == fl.spikes(1).tolist()   # Flatten passes its input on


# ------------------------------------------------------------------ the blob loader

def _status(lib, data, offset=0):
    return hostlib.load_blob(lib, data, offset)[0]


def test_blob_every_truncation_is_refused(gcc):
    lib = hostlib.runtime_lib()
    data = B.pack(small_model())
    assert _status(lib, data) == S.OK
    for n in range(len(data)):
        assert _status(lib, data[:n]) == S.ERR_BLOB_SIZE, f"truncated to {n} bytes"
    assert _status(lib, data + b"\0\0\0\0") == S.ERR_BLOB_SIZE


def test_blob_every_flipped_byte_is_refused(gcc):
    lib = hostlib.runtime_lib()
    data = B.pack(small_model())
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x5A
        want = (S.ERR_BLOB_MAGIC if i < 8 else S.ERR_BLOB_VERSION if i < 10
                else S.ERR_BLOB_SIZE if 12 <= i < 16 else S.ERR_BLOB_CRC)
        assert _status(lib, bytes(bad)) == want, f"byte {i} flipped"


def test_blob_version_magic_and_alignment(gcc):
    lib = hostlib.runtime_lib()
    t = B.tables(small_model())
    for version in (0, 2, 0xFFFF):
        assert _status(lib, B.pack_tables(t, version=version)) == S.ERR_BLOB_VERSION
    data = B.pack_tables(t)
    assert _status(lib, B.with_crc(b"ESNNBLOC" + data[8:])) == S.ERR_BLOB_MAGIC
    assert _status(lib, B.with_crc(data[:12] + struct.pack("<I", len(data) + 4) + data[16:])) == S.ERR_BLOB_SIZE
    for offset in (1, 2, 3):
        assert _status(lib, data, offset) == S.ERR_ARG, "a blob the tables cannot be used in place from"
    assert _status(lib, data, 4) == S.OK
    model = np.zeros(16, np.uint64)
    assert lib.esnn_model_from_blob(None, len(data), model.ctypes.data) == S.ERR_ARG


def _header_edit(data, offset, fmt, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return B.with_crc(bytes(b))


def test_blob_inconsistent_header_is_refused(gcc):
    lib = hostlib.runtime_lib()
    t = B.tables(small_model())
    data = B.pack_tables(t)
    at = B.layout(t.n_layers, t.wa.size, t.wb.size)
    pad = at["ltab"] + 4 * t.ltab.size   # first padding byte before the parameter table
    assert pad < at["ptab"]
    cases = {
        "header bytes": (10, "<H", 80), "layers 0": (16, "<I", 0), "row width": (20, "<I", 24),
        "param width": (24, "<I", 7), "int8 count": (28, "<I", t.wa.size + 16), "int16 count": (32, "<I", 0),
        "flags": (44, "<I", 1), "reserved": (90, "<B", 1), "padding": (pad, "<B", 1),
    }
    for what, (off, fmt, value) in cases.items():
        assert _status(lib, _header_edit(data, off, fmt, value)) == S.ERR_BLOB_FORMAT, what
    assert _status(lib, B.pack_tables(t, flags=2)) == S.ERR_BLOB_FORMAT


def _mutations(t):
    """(what, tables) with one inconsistency each, for the two-layer small_model."""
    L = P = K
    n_wb, n_vs = t.wb.size, t.n_vs

    def lt(layer, field, value, **kw):
        m = B.modified(t, **kw)
        m.ltab[layer, field] = value
        return m

    def pt(layer, field, value):
        m = B.modified(t)
        m.ptab[layer, field] = value
        return m

    v1 = int(t.ltab[1, L.L_V_OFF])
    yield "unknown layer kind", lt(0, L.L_KIND, 9)
    yield "negative layer kind", lt(0, L.L_KIND, -1)
    yield "flatten with neurons", lt(1, L.L_KIND, K.FLATTEN)
    yield "unknown neuron", lt(1, L.L_NEURON, 5)
    yield "sizes not chained", lt(1, L.L_N_IN, 5)
    yield "weights past the pool", lt(0, L.L_W_OFF, n_wb - 2)
    yield "negative weight offset", lt(0, L.L_W_OFF, -1)
    yield "recurrent weights past the pool", lt(0, L.L_WREC_OFF, n_wb - 15)
    yield "unknown pool", lt(1, L.L_W_POOL, 2)
    yield "v past the state", lt(1, L.L_V_OFF, n_vs - 1)
    yield "v overlaps", lt(1, L.L_V_OFF, int(t.ltab[0, L.L_V_OFF]) + 2)
    yield "a overlaps v", lt(1, L.L_A_OFF, v1)
    yield "spike lists overlap", lt(1, L.L_S_OFF, int(t.ltab[0, L.L_S_OFF]) + 1)
    yield "spike list over the counts", lt(1, L.L_S_OFF, t.n_ist - 3)
    yield "refractory without counters", lt(0, L.L_R_OFF, -1)
    yield "counters without refractory", lt(0, L.L_REF_STEPS, 0)
    yield "current without cuba", lt(0, L.L_I_OFF, n_vs - 4)
    yield "no adaptation for alif", lt(1, L.L_A_OFF, -1)
    yield "unknown reset", lt(1, L.L_RESET, 2)
    yield "unknown decay form", lt(1, L.L_DECAY_FORM, 3)
    yield "negative refractory", lt(1, L.L_REF_STEPS, -1)
    yield "threshold 0", pt(1, P.P_THETA, 0)
    yield "negative threshold", pt(0, P.P_THETA, -5)
    yield "decay above one", pt(0, P.P_DV, 2**24 + 1)
    yield "negative decay", pt(1, P.P_DA, -1)
    yield "fewer state words", B.modified(t, n_vs=n_vs - 1)
    yield "no room for counts", B.modified(t, n_ist=1)


def _conv_mutations(t):
    def lt(layer, field, value):
        m = B.modified(t)
        m.ltab[layer, field] = value
        return m

    yield "conv in shape", lt(0, K.L_IN_C, 2)
    yield "pool out shape", lt(1, K.L_OUT_W, 3)
    yield "conv stride 0", lt(0, K.L_STRIDE, 0)
    yield "conv padding -1", lt(0, K.L_PAD, -1)
    yield "conv kernel 0", lt(0, K.L_KH, 0)
    yield "conv out height", lt(0, K.L_KH, 2)
    yield "pool padding", lt(1, K.L_PAD, 1)
    yield "pool kernel not square", lt(1, K.L_KW, 1)
    yield "pool stride", lt(1, K.L_STRIDE, 1)
    yield "flatten with v", lt(2, K.L_V_OFF, 0)
    yield "flatten size", lt(2, K.L_N_OUT, 7)
    yield "int16 pool too small", lt(0, K.L_W_POOL, 1)


def test_blob_inconsistent_tables_are_refused(gcc):
    lib = hostlib.runtime_lib()
    for model, mutations in ((small_model(), _mutations), (conv_model(), _conv_mutations)):
        t = B.tables(model)
        assert _status(lib, B.pack_tables(t)) == S.OK
        for what, bad in mutations(t):
            assert _status(lib, B.pack_tables(bad)) == S.ERR_MODEL, what


def test_int16_fan_in_bound_is_checked(gcc):
    lib = hostlib.runtime_lib()
    net = Network((65535,), [Dense(np.ones((1, 65535)), Neuron("if"), plastic=True)])
    t = B.tables(quantize(net))
    assert _status(lib, B.pack_tables(t)) == S.OK
    big = B.modified(t, wb=np.ones(65536, np.int16))
    big.ltab[0, [K.L_N_IN, K.L_IN_W]] = 65536
    assert _status(lib, B.pack_tables(big)) == S.ERR_MODEL


# ------------------------------------------------------------------ sanitizers

@pytest.mark.parametrize("defines", [(), VARIANTS["simd+decay32"]], ids=["default", "simd+decay32"])
def test_sanitizer_build_runs_clean(gcc, defines):
    """ASan + UBSan (-fno-sanitize-recover=all) in a subprocess: random networks of every kind equal the
    emulator, a bad step is refused without touching the state, damaged blobs are refused; any report
    of the sanitizers fails the run."""
    exe = hostlib.driver(sanitize=True, defines=defines)
    for seed in range(12):
        net = random_network(300 + seed)
        model = quantize(net)
        steps = random_events(seed, net.n_inputs, 25)
        rec, sim = emulate(model, steps)
        res = hostlib.run_driver(exe, steps, B.pack(model))
        assert res.status == S.OK and res.done == len(steps)
        assert np.array_equal(res.spikes, rec.spikes) and np.array_equal(res.state, rec.state), seed
        assert np.array_equal(res.ist, sim.ist)
        assert res.bad_status == S.ERR_INPUT_INDEX and res.untouched
    net = _every_kind_network("alif", "shift", "zero", 2e-3, True, True)
    steps = random_events(1, net.n_inputs, 20, rate=0.4)
    rec, _ = emulate(quantize(net), steps)
    res = hostlib.run_driver(exe, steps, B.pack(quantize(net)))
    assert np.array_equal(res.state, rec.state) and np.array_equal(res.spikes, rec.spikes)
    net = random_network(8, conv=False)
    big = [(np.arange(MAX_EVENTS_PER_STEP) % net.n_inputs).tolist()] * 2
    rec, _ = emulate(quantize(net), big)
    res = hostlib.run_driver(exe, big, B.pack(quantize(net)))
    assert np.array_equal(res.state, rec.state) and np.array_equal(res.spikes, rec.spikes)
    data = B.pack(small_model())
    for bad, want in ((data[:50], S.ERR_BLOB_SIZE), (data[:-1], S.ERR_BLOB_SIZE),
                      (data[:200] + b"\xff" + data[201:], S.ERR_BLOB_CRC),
                      (B.pack_tables(B.modified(B.tables(small_model()), n_vs=2)), S.ERR_MODEL)):
        assert hostlib.run_driver(exe, [[0]], bad).status == want


def test_sanitizer_build_of_generated_arrays(gcc):
    model = conv_model()
    exe = hostlib.driver(model, sanitize=True)
    steps = random_events(2, 16, 20, rate=0.5)
    rec, _ = emulate(model, steps)
    res = hostlib.run_driver(exe, steps, None)
    assert np.array_equal(res.state, rec.state) and np.array_equal(res.spikes, rec.spikes)


# ------------------------------------------------------------------ code generation and the device build

def test_write_project(gcc, tmp_path):
    model = conv_model()
    paths = codegen.write_project(model, tmp_path / "proj", extra_files={"board/main.c": "int x;\n"})
    proj = tmp_path / "proj"
    for f in ("edgesnn.h", "edgesnn.c", "model_data.h", "model_data.c", "model.blob", "board/main.c"):
        assert (proj / f).exists(), f
    assert (proj / "edgesnn.c").read_bytes() == (codegen.RUNTIME_DIR / "edgesnn.c").read_bytes()
    assert (proj / "model.blob").read_bytes() == B.pack(model)
    assert set(paths) == {"runtime", "model", "blob", "extra"}
    for bad in ("/etc/x", "../x", "model_data.c"):
        with pytest.raises(Exception, match="relative path"):
            codegen.write_project(model, tmp_path / "p2", extra_files={bad: ""})
    cc = hostlib.compiler()
    res = subprocess.run([cc, *hostlib.HOST_FLAGS, "-c", "edgesnn.c", "model_data.c"], cwd=proj,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("cpu", sorted(ARM_CPUS))
def test_runtime_compiles_for_cortex_m(cpu, tmp_path):
    need("arm-none-eabi-gcc")
    net = _every_kind_network("cuba", "multiply", "subtract", 2e-3, True, True)
    codegen.write_project(quantize(net), tmp_path)
    for src in ("edgesnn.c", "model_data.c"):
        res = subprocess.run(["arm-none-eabi-gcc", *ARM_CPUS[cpu], *ARM_FLAGS, src, "-o", src + ".o"],
                             cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode == 0, f"{cpu} {src}:\n{res.stderr}"
    # no float anywhere: no soft-float helpers are called and no FPU instruction is used
    nm = subprocess.run(["arm-none-eabi-nm", "-u", "edgesnn.c.o"], cwd=tmp_path, capture_output=True, text=True)
    assert not re.search(r"__aeabi_[fd]|__aeabi_[iul]2[fd]|__(add|mul|div|sub)[sd]f3", nm.stdout), nm.stdout
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", "edgesnn.c.o"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert dis.returncode == 0 and not re.search(r"\tv[a-z]+\.f(32|64)", dis.stdout)
    # the Cortex-M4 gets the packed-SIMD int8 rows, the M0+ the portable ones
    assert ("sxtab16" in dis.stdout) == (cpu == "cortex-m4f")
