"""On-device learning over the device link (docs/protocol.md, LEARN and the STEP teach fields).

The same labelled stream with the same controls (LEARN RESET between samples, ENABLE, MASK, ETA, explicit
rewards) goes to
  (a) the emulated device (EmulatedDevice(model, learn_rule=...)), through the client over TCP,
  (b) the app firmware built with learning (export_project(..., learn_rule=...)) on qemu-mps2-an386,
  (c) edgesnn.learning.Learner (mode fixed) directly;
the readout values and classes of every step, the learning status of every control, and the weights read
back with READ_WEIGHTS afterwards are equal. The controls change behaviour (learning off: weights
unchanged; a masked layer unchanged; a larger eta shift: other weights); refusals (label out of range,
LEARN without learning, malformed LEARN, bad layers, LEARN after an upload) are the same on both devices.
"""
import numpy as np
import pytest
from conftest import need
from netgen import plastic_network, random_network

from edgesnn.device import DeviceError, EmulatedDevice, connect
from edgesnn.device import protocol as P
from edgesnn.errors import ModelError
from edgesnn.learning.learner import RULES, Learner
from edgesnn.model.quantize import quantize
from firmware_gen import build, export, qemu

Msg, Err = P.Msg, P.Err
BOARD = "qemu-mps2-an386"


def stream(seed, n_in, C, T, sample=20):
    rng = np.random.default_rng(seed)
    steps = [np.flatnonzero(rng.random(n_in) < 0.3).tolist() for _ in range(T)]
    labels = []
    for t in range(T):
        lab = int(rng.integers(C)) if t % sample == 0 else labels[-1]
        labels.append(lab)
    labels = [lab if rng.random() > 0.1 else -1 for lab in labels]      # some steps without a label
    return steps, labels


def script(n_in, C, seed=3, layers=(0, 1)):
    """A labelled stream with controls: (op, args) tuples; ``layers``: the layers that learn."""
    s1, l1 = stream(seed, n_in, C, 40)
    s2, l2 = stream(seed + 1, n_in, C, 30)
    s3, l3 = stream(seed + 2, n_in, C, 30)
    s4, l4 = stream(seed + 3, n_in, C, 20)
    return [("run", s1[:20], l1[:20], None), ("reset",), ("run", s1[20:], l1[20:], None),
            *[("eta", l, 11 - 2 * l) for l in layers], ("reset",), ("run", s2, l2, None),
            ("mask", list(layers[-1:])), ("reset",), ("run", s3, l3, None),
            ("enable", 0), ("run", s4[:10], l4[:10], None), ("enable", 1), ("mask", list(layers)),
            ("run", s4[10:], l4[10:], [1, -1, 0, 2, -3, None, 1, 1, -1, 0]), ("query",)]


def on_device(dev, ops):
    """Run the script on a device through the client: (per-step v, per-step class, statuses)."""
    vs, cls, statuses = [], [], []
    for op, *a in ops:
        if op == "run":
            steps, labels, rewards = a
            out = dev.run(steps, readout=True, labels=labels, rewards=rewards)
            vs.append(out.v)
            cls.append(out.cls)
        elif op == "reset":
            statuses.append(dev.learn_reset())
        elif op == "eta":
            statuses.append(dev.learn_eta(*a))
        elif op == "mask":
            statuses.append(dev.learn_mask(a[0]))
        elif op == "enable":
            statuses.append(dev.learn_enable(a[0]))
        else:
            statuses.append(dev.learn_status())
    return np.concatenate(vs), np.concatenate(cls), statuses


def on_learner(lr, ops):
    """The same script on the Learner: per-step readout values."""
    vs = []
    for op, *a in ops:
        if op == "run":
            steps, labels, rewards = a
            for t, ev in enumerate(steps):
                lr.step(ev, labels[t], None if rewards is None else rewards[t])
                vs.append(lr.sim.v(-1).copy())
        elif op == "reset":
            lr.reset()
        elif op == "eta":
            lr.eta_shift[a[0]] = a[1]
        elif op == "mask":
            lr.mask = set(a[0])
        elif op == "enable":
            lr.enabled = bool(a[0])
    return np.stack(vs)


def all_weights(dev, model):
    """Every weight matrix of the model read back with READ_WEIGHTS (layer, which) -> array."""
    out = {}
    for l, layer in enumerate(model.network.layers):
        out[(l, 0)] = dev.read_weights(l, 0)
        if hasattr(layer, "weight_rec"):
            out[(l, 1)] = dev.read_weights(l, 1)
    return out


def learner_weights(lr, model):
    out = {}
    for l, layer in enumerate(model.network.layers):
        out[(l, 0)] = lr.weights(l).T.ravel()
        if hasattr(layer, "weight_rec"):
            out[(l, 1)] = lr.weights_rec(l).T.ravel()
    return out


def upload_ends_learning(dev):
    """An upload ends learning: the uploaded model runs inference only, LEARN answers UNSUPPORTED."""
    dev.upload(quantize(random_network(4, conv=False, readout=True)))
    assert not dev.info.has(P.Cap.LEARN)
    for op in (dev.learn_status, dev.learn_reset):
        with pytest.raises(DeviceError) as e:
            op()
        assert e.value.code == Err.UNSUPPORTED


def same_weights(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), (what, k)


# ================================================================== the emulated device and the Learner

@pytest.mark.parametrize("rule,recurrent,alif", [("eprop", True, True), ("eprop", False, False),
                                                 ("decolle", False, False), ("rstdp", True, False),
                                                 ("readout", False, False)])
def test_emulated_learns_as_the_learner(rule, recurrent, alif):
    model = plastic_network(recurrent=recurrent, alif=alif)
    layers = sorted(Learner(model, rule, mode="fixed").layers)
    ops = script(12, 3, layers=layers)
    with EmulatedDevice(model, learn_rule=rule).serve_tcp() as srv, connect(srv.url) as dev:
        assert dev.info.has(P.Cap.LEARN)
        st = dev.learn_status()
        assert st.rule == RULES.index(rule) and st.enabled
        v, cls, statuses = on_device(dev, ops)
        got = all_weights(dev, model)
    lr = Learner(model, rule, mode="fixed")
    ref_v = on_learner(lr, ops)
    assert np.array_equal(v, ref_v)
    assert np.array_equal(cls, np.argmax(ref_v, axis=1))
    same_weights(got, learner_weights(lr, model), rule)
    assert statuses[-1].mask == sum(1 << l for l in layers) and statuses[-1].enabled
    assert statuses[-1].layers == layers
    # learning changed the weights of every learning layer
    before = learner_weights(Learner(model, rule, mode="fixed"), model)
    assert any(not np.array_equal(got[k], before[k]) for k in got)


def test_controls_change_behaviour():
    model = plastic_network(recurrent=True, alif=False)
    steps, labels = stream(7, 12, 3, 60)
    base = all_weights(_Direct(EmulatedDevice(model, learn_rule="eprop")), model)

    def after(*controls):
        d = _Direct(EmulatedDevice(model, learn_rule="eprop"))
        for c in controls:
            getattr(d, c[0])(*c[1:])
        d.run(steps, labels=labels)
        return all_weights(d, model), d.learn_status()

    w_on, st = after()
    assert st.enabled and st.mask == 3 and st.eta == (14, 12)
    assert all(not np.array_equal(w_on[k], base[k]) for k in base)        # every layer learned
    w_off, st = after(("learn_enable", False))
    assert not st.enabled
    same_weights(w_off, base, "learning off")
    w_m, st = after(("learn_mask", [1]))
    assert st.mask == 2
    assert np.array_equal(w_m[(0, 0)], base[(0, 0)]) and np.array_equal(w_m[(0, 1)], base[(0, 1)])
    assert not np.array_equal(w_m[(1, 0)], base[(1, 0)])
    w_e, st = after(("learn_eta", 1, 6))
    assert st.eta == (14, 6)
    assert not np.array_equal(w_e[(1, 0)], w_on[(1, 0)])
    assert np.abs(w_e[(1, 0)].astype(int) - base[(1, 0)]).sum() > np.abs(w_on[(1, 0)].astype(int) - base[(1, 0)]).sum()
    # labels without learning: a device without the capability ignores them
    plain = _Direct(EmulatedDevice(model))
    a = plain.run(steps, readout=True, labels=labels)
    b = _Direct(EmulatedDevice(model)).run(steps, readout=True)
    assert np.array_equal(a.v, b.v)
    same_weights(all_weights(plain, model), base, "no learning capability")


class _Direct:
    """The client over an in-process transport (EmulatedDevice.feed): no sockets."""

    def __new__(cls, emu):
        from edgesnn.device.client import Device
        return Device(_Port(emu), timeout=2.0, url="direct")


class _Port:
    def __init__(self, emu):
        self.emu, self.buf = emu, b""

    @property
    def in_waiting(self):
        return len(self.buf)

    def write(self, data):
        self.buf += self.emu.feed(data)

    def flush(self):
        pass

    def read(self, n):
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self):
        pass


def learn_refusals(dev, model):
    """Refusals, as (code, detail) per request; every one leaves the device unchanged."""
    out = []

    def ask(type_, payload):
        try:
            return ("ok", dev.request(type_, payload))
        except DeviceError as e:
            return (e.code, e.detail)

    for payload in (b"", b"\x05", b"\x00\x00", b"\x04\x01", b"\x01", b"\x01\x02", b"\x01\x01\x00",
                    b"\x02\x01\x00\x00", b"\x02\x03\x00\x00\x00\x00", b"\x03\x00", b"\x03\x00\x00",
                    b"\x03\x00\x00\x20", b"\x03\x00\x00\x0e\x00", b"\x03\x05\x00\x0e",
                    P.pack_learn(P.LEARN_MASK, 1 << 5), P.pack_learn(P.LEARN_MASK, 1 << 31),
                    P.pack_learn(P.LEARN_ETA, 2, 3)):
        out.append(ask(Msg.LEARN, payload))
    n_out = int(model.network.n_outputs)
    for label in (n_out, 0xFFFF):
        req = P.pack_step_request(P.STEP_READOUT, [P.StepIn([1], 0), P.StepIn([2], label)])
        out.append(ask(Msg.STEP, req))
    return out


EXPECTED_REFUSALS = [(Err.MALFORMED, 0), (Err.MALFORMED, 0), (Err.MALFORMED, 1), (Err.MALFORMED, 1),
                     (Err.MALFORMED, 1), (Err.MALFORMED, 1), (Err.MALFORMED, 2), (Err.MALFORMED, 1),
                     (Err.MALFORMED, 5), (Err.MALFORMED, 1), (Err.MALFORMED, 3), (Err.MALFORMED, 3),
                     (Err.MALFORMED, 4), (Err.ARGUMENT, 5), (Err.ARGUMENT, 5), (Err.ARGUMENT, 31),
                     (Err.ARGUMENT, 2), (Err.ARGUMENT, 3), (Err.ARGUMENT, 0xFFFF)]


def test_refusals_emulated():
    model = plastic_network(recurrent=True)
    dev = _Direct(EmulatedDevice(model, learn_rule="eprop"))
    status = dev.learn_status()
    assert learn_refusals(dev, model) == EXPECTED_REFUSALS
    assert dev.learn_status() == status and dev.stats().steps == 0        # nothing changed, nothing ran
    with pytest.raises(Exception, match="label 3"):                       # the client checks first
        dev.run([[1]], labels=[3])
    # a device without learning
    plain = _Direct(EmulatedDevice(model))
    assert not plain.info.has(P.Cap.LEARN)
    with pytest.raises(DeviceError) as e:
        plain.learn_status()
    assert e.value.code == Err.UNSUPPORTED
    with pytest.raises(DeviceError) as e:
        plain.request(Msg.LEARN, b"\x09\x09")                             # UNSUPPORTED before the format
    assert e.value.code == Err.UNSUPPORTED
    upload_ends_learning(dev)     # the uploaded model runs inference only


def test_export_learning_is_optional(tmp_path):
    model = plastic_network(recurrent=True, alif=True)
    prof = "qemu-mps2-an386"
    a = export.export_project(model, prof, tmp_path / "a")
    b = export.export_project(model, prof, tmp_path / "b", learn_rule="eprop")
    assert "learn" not in a and b["learn"]["rule"] == "eprop"
    cfg_a = (tmp_path / "a/board/board_config.h").read_text()
    cfg_b = (tmp_path / "b/board/board_config.h").read_text()
    assert "LEARN" not in cfg_a and "APP_LEARN_CONFIG" in cfg_b
    assert "ESNN_LINK_LEARN" not in (tmp_path / "a/Makefile").read_text()
    assert "esnn_learn.c" in (tmp_path / "b/Makefile").read_text()
    assert not (tmp_path / "a/esnn_learn.c").exists()
    app = export.app_sizes(export.load_profile(prof), model)
    assert export.board_files(export.load_profile(prof), "app", app) == \
        export.board_files(export.load_profile(prof), "app", app, None)
    with pytest.raises(ModelError):
        export.export_project(quantize(random_network(4, conv=False, readout=True)), prof, tmp_path / "c",
                              learn_rule="eprop")                            # nothing plastic: refused


# ================================================================== the app firmware on QEMU

# (rule, hidden layer recurrent, ALIF, board): e-prop on a Cortex-M4, R-STDP with rewards on a Cortex-M3
FIRMWARES = [("eprop", True, True, BOARD), ("rstdp", True, False, "qemu-mps2-an385")]


@pytest.fixture(scope="module", params=FIRMWARES, ids=[f[0] + "-" + f[3] for f in FIRMWARES])
def learn_firmware(request, tmp_path_factory):
    need("arm-none-eabi-gcc", "arm-none-eabi-size", "make", "qemu-system-arm")
    rule, recurrent, alif, board = request.param
    model = plastic_network(recurrent=recurrent, alif=alif)
    d = tmp_path_factory.mktemp("learnapp")
    res = export.export_project(model, board, d, learn_rule=rule)
    rep = build.build_project(d)
    assert rep["fits"], rep
    return model, rep["elf"], res["app"], rule, board


def emulated_like(model, app, rule, board):
    return EmulatedDevice(model, upload_capacity=app["upload_bytes"], max_payload=app["max_payload"],
                          max_steps=app["max_steps"], state_capacity=app["state_bytes"],
                          max_events=app["max_events"], learn_rule=rule, name=board)


def test_board_learns_as_the_emulator_and_the_learner(learn_firmware):
    model, elf, app, rule, board = learn_firmware
    ops = script(12, 3, seed=11)
    ref = emulated_like(model, app, rule, board)
    with qemu.Session(elf, board, tcp=True) as s, ref.serve_tcp() as srv, \
            connect(s.url, timeout=10) as dev, connect(srv.url) as edev:
        info, einfo = dev.info, edev.info
        assert info.has(P.Cap.LEARN) and einfo.has(P.Cap.LEARN)
        assert info.capabilities == einfo.capabilities | P.Cap.CYCLES
        assert dev.learn_status() == edev.learn_status()
        w0 = all_weights(dev, model)
        same_weights(w0, all_weights(edev, model), "before")
        v, cls, st = on_device(dev, ops)
        ev, ecls, est = on_device(edev, ops)
        assert np.array_equal(v, ev) and np.array_equal(cls, ecls)
        assert st == est
        w = all_weights(dev, model)
        same_weights(w, all_weights(edev, model), "after")
        lr = Learner(model, rule, mode="fixed")
        assert np.array_equal(v, on_learner(lr, ops))
        same_weights(w, learner_weights(lr, model), "the Learner")
        assert any(not np.array_equal(w[k], w0[k]) for k in w)
        # learning off: the steps run, the weights stay
        dev.learn_enable(False)
        steps, labels = stream(99, 12, 3, 15)
        dev.run(steps, labels=labels)
        same_weights(all_weights(dev, model), w, "learning off on the board")
        dev.learn_enable(True)
        # refusals: the same codes and details as the emulated device, nothing changed
        status = dev.learn_status()
        dev.stats(clear=True)
        assert learn_refusals(dev, model) == learn_refusals(edev, model) == EXPECTED_REFUSALS
        assert dev.learn_status() == status and dev.stats().steps == 0
        same_weights(all_weights(dev, model), w, "after the refusals")
        upload_ends_learning(dev)     # on the board too


# ================================================================== the host build of esnn_link.c, byte for byte

HOST = {"max_payload": 1024, "max_events": 300, "max_steps": 16, "upload": 1 << 16, "state": 1 << 16,
        "name": "emulator", "clock": 0}


def host_learn_device(model):
    """host_main.c + esnn_link.c + esnn_learn.c with ESNN_LINK_LEARN, ASan + UBSan (cached build)."""
    from firmware_gen import codegen, hostdevice, hostlib
    files = hostdevice.link_files()
    for f in ("esnn_learn.h", "esnn_learn.c"):
        files[f] = (codegen.RUNTIME_DIR / f).read_bytes()
    files["host_main.c"] = (hostdevice.BOARD_DIR / "host_main.c").read_bytes()
    files.update(hostlib._generated(model))
    flags = hostlib.HOST_FLAGS + hostlib.SANITIZE_FLAGS + ("-DESNN_LINK_LEARN",)
    return hostlib.build(files, flags, "host_device_learn")


def run_host(exe, data, learn_words):
    import subprocess
    args = [str(exe)]
    for k, v in HOST.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    args += ["--learn", ",".join(str(int(w)) for w in learn_words)]
    res = subprocess.run(args, input=data, capture_output=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


def learning_stream(rng, n_in, C, n_layers, other_blob, n_frames=150):
    out = []
    for i in range(n_frames):
        seq = int(rng.integers(65536))
        kind = int(rng.integers(10))
        if kind <= 3:                                                     # labelled steps
            recs = []
            for _ in range(int(rng.integers(1, 12))):
                lab = int(rng.integers(C + 1)) if rng.random() < 0.97 else int(rng.integers(65536))
                lab = None if rng.random() < 0.2 else lab
                rew = None if rng.random() < 0.6 else int(rng.integers(-40, 40))
                recs.append(P.StepIn(np.flatnonzero(rng.random(n_in) < 0.3), lab, rew))
            if rng.random() < 0.3:
                recs = [P.StepIn(r.indices, min(r.label, C - 1) if r.label is not None else None, r.reward)
                        for r in recs]
            out.append(P.frame(Msg.STEP, seq, P.pack_step_request(int(rng.integers(4)), recs)))
        elif kind <= 6:                                                   # LEARN, valid or not
            r = rng.random()
            if r < 0.6:
                op = int(rng.integers(5))
                args = {0: (), 1: (int(rng.integers(2)),), 2: (int(rng.integers(4)) if rng.random() < 0.8
                                                             else int(rng.integers(1 << 32)),),
                        3: (int(rng.integers(n_layers + 1)), int(rng.integers(8, 20))), 4: ()}[op]
                payload = P.pack_learn(op, *args)
            else:
                payload = bytes(rng.integers(0, 256, int(rng.integers(0, 7)), dtype=np.uint8))
                if payload and rng.random() < 0.7:
                    payload = bytes([int(rng.integers(6))]) + payload[1:]
            out.append(P.frame(Msg.LEARN, seq, payload))
        elif kind == 7:
            layer = int(rng.integers(n_layers))
            out.append(P.frame(Msg.READ_WEIGHTS, seq, P.pack_read_weights(layer, int(rng.integers(2)), 0,
                                                                          int(rng.integers(1, 120)))))
        elif kind == 8:
            out.append(P.frame(int(rng.choice([Msg.RESET, Msg.HELLO])), seq))
        else:
            out.append(P.frame(Msg.READ_STATE, seq, P.pack_read_state(int(rng.integers(n_layers)),
                                                                      int(rng.integers(3)), 0, 3)))
    # finally an upload: learning ends (HELLO, LEARN and labelled steps after it)
    seq = 100
    out.append(P.frame(Msg.UPLOAD_BEGIN, seq, P.pack_upload_begin(len(other_blob), P.crc32(other_blob))))
    for k, off in enumerate(range(0, len(other_blob), 1000)):
        out.append(P.frame(Msg.UPLOAD_CHUNK, seq + 1 + k, P.pack_upload_chunk(off, other_blob[off:off + 1000])))
    out += [P.frame(Msg.UPLOAD_COMMIT, 300), P.frame(Msg.HELLO, 301), P.frame(Msg.LEARN, 302, b"\x00"),
            P.frame(Msg.STEP, 303, P.pack_step_request(2, [P.StepIn([0, 1], 60000, 5)]))]
    return b"".join(out)


@pytest.mark.parametrize("rule,recurrent,alif,opts", [("eprop", True, True, None), ("rstdp", True, False, None),
                                                      ("decolle", False, False, None),
                                                      ("eprop", True, True, {"trial": 3, "center": 4}),
                                                      ("readout", False, False, {"trial": 1, "hinge": True})])
def test_host_device_learning_equals_emulator(rule, recurrent, alif, opts):
    """The C link with the C learner (host_main.c, --learn with the 17 config words) answers a random
    stream of labelled steps, LEARN operations and reads byte for byte as the emulated device; trial mode
    too (LEARN RESET and label changes end trials, ENABLE and MASK decide whether their update applies)."""
    need("gcc")
    from firmware_gen import blob as B
    from firmware_gen.hostlib import learn_config
    model = plastic_network(recurrent=recurrent, alif=alif)
    exe = host_learn_device(model)
    words = learn_config(Learner(model, rule, mode="fixed", **(opts or {})))
    assert len(words) == P.LEARN_CONFIG_WORDS
    other = B.pack(quantize(random_network(4, conv=False, readout=True)))
    rng = np.random.default_rng(len(rule))
    trials = []                                       # trial mode: the steps of each trial whose update applied
    for k in range(4):
        data = learning_stream(rng, 12, 3, 2, other)
        emu = EmulatedDevice(model, upload_capacity=HOST["upload"], max_payload=HOST["max_payload"],
                             max_steps=HOST["max_steps"], max_events=HOST["max_events"],
                             state_capacity=HOST["state"], learn_rule=rule, learn_options=opts)
        end = emu.learner._end_trial_layer
        emu.learner._end_trial_layer = lambda L, end=end: (trials.append(L.n), end(L))[1]
        want = emu.feed(data)
        got = run_host(exe, data, words)
        if got != want:
            a, b = P.parse_all(got), P.parse_all(want)
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise AssertionError(f"stream {k}: reply {first} differs: C {a[first] if first < len(a) else None} "
                                 f"Python {b[first] if first < len(b) else None}")
        replies = P.parse_all(got)
        kinds = {(r.type, P.unpack_error(r.payload).code if r.type == Msg.ERROR else None) for r in replies}
        assert (Msg.LEARN | P.REPLY, None) in kinds and (Msg.ERROR, Err.MALFORMED) in kinds
        assert (Msg.ERROR, Err.ARGUMENT) in kinds and (Msg.ERROR, Err.UNSUPPORTED) in kinds
    if opts:
        assert len(trials) > 10 and max(trials) > 1 and min(trials) == 1, trials
    else:
        assert not trials


def test_cli_emulate_learn(tmp_path):
    import subprocess
    import sys

    from conftest import emulate_cli
    from edgesnn.model import modelfile
    model = plastic_network(recurrent=True)
    path = tmp_path / "m.esnn"
    modelfile.save(model, path)
    with emulate_cli(path, "--learn", "eprop") as url:
        ops = script(12, 3, seed=21)
        with connect(url, timeout=5.0) as d:
            assert d.info.has(P.Cap.LEARN) and d.learn_status().rule == RULES.index("eprop")
            v, _, _ = on_device(d, ops)
            got = all_weights(d, model)
        lr = Learner(modelfile.load(path), "eprop", mode="fixed")
        assert np.array_equal(v, on_learner(lr, ops))
        same_weights(got, learner_weights(lr, model), "edgesnn emulate --learn")
    bad = subprocess.run([sys.executable, "-m", "edgesnn", "emulate", str(path), "--listen", "tcp://127.0.0.1:0",
                          "--learn", "nope"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0 and "unknown learning rule" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_learn_trial(tmp_path):
    """--learn-trial K: `edgesnn emulate` runs the Learner with trial=K (the LEARN status's last config word,
    weights equal to the Learner's), `edgesnn export` compiles it into APP_LEARN_CONFIG; refused without
    --learn and out of 0..31."""
    import json
    import subprocess
    import sys

    from conftest import emulate_cli
    from edgesnn.model import modelfile
    from firmware_gen.export import app_learn
    model = plastic_network(recurrent=False)
    path = tmp_path / "m.esnn"
    modelfile.save(model, path)
    with emulate_cli(path, "--learn", "readout", "--learn-trial", "2", "--learn-center", "3") as url:
        ops = script(12, 3, seed=22, layers=(1,))
        with connect(url, timeout=5.0) as d:
            st = d.learn_status()
            v, _, _ = on_device(d, ops)
            got = all_weights(d, model)
    lr = Learner(model, "readout", mode="fixed", trial=2, center=3)
    assert list(st.config) == lr.config() and st.config[-1] == 2
    assert Learner.for_config(model, st.config).trial == 2
    assert np.array_equal(v, on_learner(lr, ops))
    same_weights(got, learner_weights(lr, model), "edgesnn emulate --learn-trial")
    assert lr.updates > 0
    run = [sys.executable, "-m", "edgesnn", "export", str(path), "--device", BOARD]
    ok = subprocess.run(run + ["--out", str(tmp_path / "fw"), "--learn", "readout", "--learn-trial", "5", "--json"],
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    meta = json.loads((tmp_path / "fw" / "project.json").read_text())
    assert meta["learn"]["options"] == {"trial": 5}
    cfg = app_learn(model, "readout", {"trial": 5})["config"]
    assert len(cfg) == P.LEARN_CONFIG_WORDS and cfg[-1] == "5u"
    assert "#define APP_LEARN_CONFIG {{ {} }}".format(", ".join(cfg)) in \
        (tmp_path / "fw" / "board" / "board_config.h").read_text()
    for extra, msg in ((["--learn-trial", "3"], "--learn-trial needs --learn RULE"),
                       (["--learn", "readout", "--learn-trial", "32"], "trial must be 0 (off) or a keep shift")):
        bad = subprocess.run(run + ["--out", str(tmp_path / "bad"), *extra], capture_output=True, text=True,
                             timeout=120, check=False)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
