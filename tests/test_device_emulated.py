"""The host client against the emulated device, over real transports (TCP, a pty, the CLI subprocess):
outputs equal the fixed-point simulator's, uploads, reads, statistics, and the faults of
docs/protocol.md (damaged bytes, truncated frames, disconnects mid-upload, refused requests)."""
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import serial

from edgesnn.device import DeviceError, EmulatedDevice, LinkError, connect
from edgesnn.device import protocol as P
from edgesnn.device.client import Device
from edgesnn.device.protocol import Err, Msg
from edgesnn.errors import InputError
from edgesnn.kernels import layout as K
from edgesnn.model import modelfile, presets
from edgesnn.model.program import build_fixed
from edgesnn.model.quantize import quantize
from edgesnn.simulator import Simulator
from firmware_gen import blob as B
from firmware_gen import status as S
from netgen import random_events, random_network

TIMEOUT = 10.0   # generous: only a broken link waits this long, and CI machines may be loaded


@pytest.fixture(scope="module")
def models():
    """Random networks covering conv/pool/flatten, recurrent, LI readouts and spiking outputs."""
    out = {}
    for seed, conv, readout in ((1, False, False), (2, False, True), (3, True, False), (4, True, True)):
        out[seed] = quantize(random_network(seed, conv=conv, readout=readout))
    return out


@pytest.fixture(scope="module")
def kws():
    return quantize(presets.make("kws", seed=3))


@pytest.fixture
def tcp(models):
    """A device serving models[1] over TCP on 127.0.0.1; yields (device, server)."""
    dev = EmulatedDevice(models[1])
    with dev.serve_tcp("127.0.0.1", 0) as srv:
        yield dev, srv


def expected_class(model, counts, v):
    """docs/protocol.md: argmax v for an LI last layer, else argmax of spike counts (-1 while all zero)."""
    if model.network.layers[-1].neuron.kind == "li":
        return int(np.argmax(v))
    return -1 if not counts.any() else int(np.argmax(counts))


def check_against_simulator(dev, model, events, sim=None):
    """Run ``events`` on the device and on a simulator; every step's spikes, v and class agree."""
    sim = sim or Simulator.fixed(model)
    out = dev.run(events, spikes=True, readout=True)
    counts = np.zeros(sim.n_outputs, np.int64)
    for t, ev in enumerate(events):
        s = np.sort(sim.step(ev))
        counts[s] += 1
        assert list(out[t].spikes) == list(s), f"step {t}: spikes"
        assert np.array_equal(out[t].v, sim.v()), f"step {t}: readout"
        assert out[t].cls == expected_class(model, counts, sim.v()), f"step {t}: class"
    return sim


def raw_exchange(url, data, n_replies=1, timeout=TIMEOUT):
    """Send raw bytes over a fresh connection; return the parsed reply events."""
    port = serial.serial_for_url(url, timeout=0.05)
    try:
        port.write(data)
        p, got, end = P.FrameParser(), [], time.monotonic() + timeout
        while len(got) < n_replies and time.monotonic() < end:
            got += p.feed(port.read(4096))
        return got
    finally:
        port.close()


# ------------------------------------------------------------------ outputs equal the simulator
@pytest.mark.parametrize("transport", ["tcp", "pty"])
def test_outputs_equal_simulator_on_random_networks(models, transport):
    for seed, model in models.items():
        dev = EmulatedDevice(model)
        srv = dev.serve_tcp("127.0.0.1", 0) if transport == "tcp" else dev.serve_pty()
        with srv, connect(srv.url, timeout=TIMEOUT) as d:
            assert d.info.n_inputs == model.network.n_inputs and d.info.name == "emulator"
            assert d.info.model_hash == B.model_hash_bytes(model)
            events = random_events(seed, d.info.n_inputs, 120)
            sim = check_against_simulator(d, model, events)
            # READ_STATE equals the simulator's state after the run, every layer and field
            for layer in range(d.info.n_layers):
                row = sim.program.ltab[layer]
                for field, col in ((0, K.L_V_OFF), (1, K.L_I_OFF), (2, K.L_A_OFF)):
                    got = d.read_state(layer, field)
                    off = row[col]
                    want = sim.vs[off:off + row[K.L_N_OUT]] if off >= 0 else np.zeros(0, np.int32)
                    assert np.array_equal(got, want), (seed, layer, field)
            d.reset()
            check_against_simulator(d, model, events[:30])   # RESET: as a fresh simulator


def test_preset_outputs_and_splitting_into_requests(kws):
    """A preset with an LI readout, run through a device whose small limits force many requests."""
    dev = EmulatedDevice(kws, max_payload=300, max_steps=3)
    with dev.serve_tcp() as srv, connect(srv.url, timeout=TIMEOUT) as d:
        events = random_events(5, d.info.n_inputs, 60, rate=0.1)
        check_against_simulator(d, kws, events)
        st = d.stats()
        assert st.steps == 60 and st.frames_received > 20      # split into many STEP requests
        sim = _sim_after(kws, events)
        a_off, n = sim.program.ltab[0, K.L_A_OFF], sim.program.ltab[0, K.L_N_OUT]
        assert a_off >= 0 and np.array_equal(d.read_state(0, "a"), sim.vs[a_off:a_off + n])   # ALIF


def _sim_after(model, events):
    sim = Simulator.fixed(model)
    for ev in events:
        sim.step(ev)
    return sim


def test_step_single_and_flags(tcp, models):
    dev, srv = tcp
    with connect(srv.url, timeout=TIMEOUT) as d:
        sim = Simulator.fixed(models[1])
        ev = list(range(d.info.n_inputs))
        o = d.step(ev, readout=True, cycles=True)
        s = sim.step(ev)
        assert list(o.spikes) == sorted(s) and np.array_equal(o.v, sim.v()) and o.cycles == 0
        o2 = d.step([], spikes=False)
        assert o2.spikes is None and o2.v is None and o2.cycles is None
        assert d.echo(b"\x00\xa5\x5a" * 100) == b"\x00\xa5\x5a" * 100


def test_stats_counters(models):
    model = models[3]        # conv, pool, flatten, dense/recurrent
    dev = EmulatedDevice(model)
    with dev.serve_tcp() as srv, connect(srv.url, timeout=TIMEOUT) as d:
        d.stats(clear=True)
        events = random_events(8, d.info.n_inputs, 40)
        d.run(events)
        st = d.stats(clear=True)
        sim, prog = Simulator.fixed(model), build_fixed(model)
        lt = prog.ltab
        spikes = ops = 0
        prev = [0] * prog.n_layers
        for ev in events:
            sim.step(ev)
            into = len(ev)
            for l in range(prog.n_layers):
                n = len(sim.spikes(l))
                kind = lt[l, K.L_KIND]
                per = {K.DENSE: lt[l, K.L_N_OUT], K.RECURRENT: lt[l, K.L_N_OUT], K.SUMPOOL2D: 1, K.FLATTEN: 0,
                       K.CONV2D: lt[l, K.L_OUT_C] * lt[l, K.L_KH] * lt[l, K.L_KW]}[kind]
                ops += into * per + (prev[l] * lt[l, K.L_N_OUT] if kind == K.RECURRENT else 0)
                if lt[l, K.L_NEURON] not in (K.LI, K.NONE):
                    spikes += n
                prev[l], into = n, n
        assert (st.steps, st.input_events) == (40, sum(map(len, events)))
        assert (st.output_spikes, st.synaptic_ops) == (spikes, ops)
        assert st.frames_received == 2 and st.frames_refused == 0 and st.cycles == 0
        assert d.stats().frames_received == 1                  # cleared, then this STATS itself


# ------------------------------------------------------------------ upload and reads
def test_upload_second_model_then_identical_outputs(models):
    old, new = models[1], models[4]
    dev = EmulatedDevice(old)
    with dev.serve_pty() as srv, connect(srv.url, timeout=TIMEOUT) as d:
        d.run([[0, 1]] * 5)
        seen = []
        digest = d.upload(new, progress=lambda done, total: seen.append((done, total)))
        assert digest == B.model_hash_bytes(new) == d.info.model_hash
        assert seen[-1][0] == seen[-1][1] == len(B.pack(new))
        assert d.info.n_inputs == new.network.n_inputs and d.info.n_layers == len(new.network.layers)
        check_against_simulator(d, new, random_events(11, d.info.n_inputs, 80))


def test_read_weights_equal_quantized_weights(models, kws):
    for model in (*models.values(), kws):
        dev = EmulatedDevice(model, max_payload=512)          # several requests per matrix
        with dev.serve_tcp() as srv, connect(srv.url, timeout=TIMEOUT) as d:
            for l, (layer, q) in enumerate(zip(model.network.layers, model.layers)):
                w = d.read_weights(l, 0)
                rec = d.read_weights(l, 1)
                if q is None or q.weight is None:
                    assert w.size == 0 and rec.size == 0
                    continue
                dtype = np.int8 if q.bits == 8 else np.int16
                order = (1, 2, 3, 0) if q.weight.ndim == 4 else (1, 0)       # input-major
                assert w.dtype == dtype and np.array_equal(w, np.transpose(q.weight, order).ravel())
                want_rec = q.weight_rec.T.ravel() if q.weight_rec is not None else np.zeros(0)
                assert np.array_equal(rec, want_rec)


def test_upload_refusals_leave_old_model_running(models):
    old = models[2]
    good = B.pack(models[1])
    dev = EmulatedDevice(old, upload_capacity=len(good) + 8)
    with dev.serve_tcp() as srv, connect(srv.url, timeout=TIMEOUT) as d:
        h = d.info.model_hash
        # too big for the capacity
        with pytest.raises(DeviceError) as e:
            d.upload(models[3] if len(B.pack(models[3])) > len(good) + 8 else good + bytes(64))
        assert e.value.code_name == "TOO_BIG" and e.value.detail == len(good) + 8
        assert "TOO_BIG" in str(e.value) and "UPLOAD_BEGIN" in str(e.value)
        # a corrupt blob (consistent CRC, inconsistent tables): MODEL with the runtime's status
        t = B.unpack(good)
        t.ltab[-1, K.L_N_IN] += 1             # no longer the previous layer's n_out
        with pytest.raises(DeviceError) as e:
            d.upload(B.pack_tables(t))
        assert e.value.code == Err.MODEL and e.value.detail == S.ERR_MODEL and "ERR_MODEL" in str(e.value)
        # not a blob at all
        with pytest.raises(DeviceError) as e:
            d.upload(b"NOTABLOB" + good[8:])
        assert e.value.code == Err.MODEL and e.value.detail == S.ERR_BLOB_MAGIC
        assert d.hello().model_hash == h
        d.reset()
        check_against_simulator(d, old, random_events(2, d.info.n_inputs, 30))
    # state that does not fit the device's state memory
    dev = EmulatedDevice(old, state_capacity=64)
    with dev.serve_tcp() as srv, connect(srv.url, timeout=TIMEOUT) as d:
        with pytest.raises(DeviceError) as e:
            d.upload(good)
        tables = B.read_blob(good)
        assert e.value.code_name == "STATE_TOO_BIG"
        assert e.value.detail == 4 * tables.state_words + 4 * int(tables.ltab[-1, K.L_N_OUT])
        assert d.hello().model_hash == B.model_hash_bytes(old)


def test_disconnect_at_every_chunk_boundary(models):
    old, new = models[2], models[1]
    blob = B.pack(new)
    dev = EmulatedDevice(old, max_payload=200)
    chunk = 200 - 4
    n_chunks = -(-len(blob) // chunk)
    assert n_chunks >= 4
    events = random_events(3, old.network.n_inputs, 12)
    with dev.serve_tcp() as srv:
        for k in range(n_chunks + 1):                  # after BEGIN and k chunks (k = all: before COMMIT)
            with connect(srv.url, timeout=TIMEOUT) as d:
                d.request(Msg.UPLOAD_BEGIN, P.pack_upload_begin(len(blob), P.crc32(blob)))
                for i in range(k):
                    d.request(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(i * chunk, blob[i * chunk:(i + 1) * chunk]))
            with connect(srv.url, timeout=TIMEOUT) as d:   # reconnect: the old model, unchanged
                assert d.info.model_hash == B.model_hash_bytes(old)
                d.reset()
                check_against_simulator(d, old, events)
        with connect(srv.url, timeout=TIMEOUT) as d:     # and a complete upload still works
            assert d.upload(blob) == B.model_hash_bytes(new)
            check_against_simulator(d, new, random_events(4, new.network.n_inputs, 20))


def test_upload_resumes_at_the_offset_the_device_names(tcp, models):
    dev, srv = tcp
    blob = B.pack(models[2])
    with connect(srv.url, timeout=TIMEOUT) as d:
        d.request(Msg.UPLOAD_BEGIN, P.pack_upload_begin(len(blob), P.crc32(blob)))
        d.request(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, blob[:100]))
        with pytest.raises(DeviceError) as e:            # a resend of an acknowledged chunk
            d.request(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, blob[:100]))
        assert (e.value.code_name, e.value.detail) == ("OFFSET", 100)
        with pytest.raises(DeviceError) as e:
            d.request(Msg.UPLOAD_COMMIT)
        assert (e.value.code_name, e.value.detail) == ("INCOMPLETE", 100)
        assert d.upload(blob) == B.model_hash_bytes(models[2])


# ------------------------------------------------------------------ faults on the link
class CorruptingProxy:
    """A TCP proxy that flips one bit in the n-th chunk going "up" (host to device) or "down"."""

    def __init__(self, target_url, corrupt_chunk=0, direction="up"):
        host, port = target_url[len("socket://"):].rsplit(":", 1)
        self.target = (host, int(port))
        self.corrupt_chunk, self.direction = corrupt_chunk, direction
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        conn, _ = self.sock.accept()
        up = socket.create_connection(self.target)
        for s in (conn, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def pump(src, dst, corrupt):
            n = 0
            try:
                while data := src.recv(65536):
                    if corrupt and n == self.corrupt_chunk:
                        data = data[:-6] + bytes([data[-6] ^ 0x10]) + data[-5:]   # inside the payload
                    n += 1
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_RDWR)      # wakes the other pump (close alone would not)
                except OSError:
                    pass
                dst.close()

        threading.Thread(target=pump, args=(up, conn, self.direction == "down"), daemon=True).start()
        pump(conn, up, self.direction == "up")


def test_damaged_request_is_refused_with_crc_and_retried(tcp):
    dev, srv = tcp
    port = serial.serial_for_url(CorruptingProxy(srv.url, corrupt_chunk=1).url, timeout=0.05)
    with Device(port, timeout=TIMEOUT) as d:
        d.hello()                                         # chunk 0
        before = dev.stats.frames_refused
        assert d.echo(b"0123456789") == b"0123456789"     # chunk 1 damaged: CRC, then resent
        assert dev.stats.frames_refused == before + 1
    # and without retries left the host sees DeviceError CRC
    got = raw_exchange(srv.url, _damaged(P.frame(Msg.ECHO, 77, b"abcdef")))
    assert got[0].type == Msg.ERROR and got[0].seq == 77
    assert P.unpack_error(got[0].payload) == P.ErrorReply(Msg.ECHO, Err.CRC, 0)


def test_damaged_chunk_reply_is_resent_and_resumed_at_the_named_offset(models):
    dev = EmulatedDevice(models[1], max_payload=128)
    blob = B.pack(models[2])
    with dev.serve_tcp() as srv:
        port = serial.serial_for_url(CorruptingProxy(srv.url, corrupt_chunk=3, direction="down").url, timeout=0.05)
        with Device(port, timeout=TIMEOUT) as d:
            d.hello()                                     # reply 0; replies 1 (BEGIN), 2, 3 (chunks)
            assert d.upload(blob) == B.model_hash_bytes(models[2])   # reply 3 damaged: resent, OFFSET
            n_chunks = -(-len(blob) // (128 - 4))
            # HELLO, BEGIN, the chunks, the resent chunk, COMMIT, HELLO (sizes of the new model)
            assert dev.stats.frames_received == 1 + 1 + n_chunks + 1 + 1 + 1
            check_against_simulator(d, models[2], random_events(6, d.info.n_inputs, 10))


def test_loop_url_is_not_a_device():
    t0 = time.monotonic()
    with pytest.raises(LinkError, match="not its reply"):
        connect("loop://", timeout=0.2)                  # our own request comes back
    assert time.monotonic() - t0 < 3


def _damaged(f):
    b = bytearray(f)
    b[11] ^= 1
    return bytes(b)


def test_truncated_frame_then_timeout_then_recovery(tcp):
    dev, srv = tcp
    with connect(srv.url, timeout=0.3) as d:
        partial = P.frame(Msg.ECHO, 500, bytes(60))[:30]      # a trusted header promising 60 bytes
        d.port.write(partial)
        t0 = time.monotonic()
        with pytest.raises(LinkError, match="no reply to ECHO"):
            d.echo(b"x")                                  # swallowed as the partial frame's payload
        assert time.monotonic() - t0 < 1.0
        d.port.write(bytes(64))                           # completes it; its CRC fails (stale reply)
        assert d.hello().name == "emulator"               # stale replies dropped, link usable again


def test_silent_peer_and_closed_link_raise_link_error():
    sock = socket.create_server(("127.0.0.1", 0))         # accepts, never answers
    url = f"socket://127.0.0.1:{sock.getsockname()[1]}"
    try:
        t0 = time.monotonic()
        with pytest.raises(LinkError, match="HELLO"):
            connect(url, timeout=0.2)
        assert time.monotonic() - t0 < 3
    finally:
        sock.close()
    with pytest.raises(LinkError, match="cannot open"):
        connect("socket://127.0.0.1:1", timeout=0.2)
    dev = EmulatedDevice(quantize(random_network(1, conv=False)))
    srv = dev.serve_tcp()
    d = connect(srv.url, timeout=0.5)
    srv.close()                                           # the device goes away
    with pytest.raises(LinkError):
        for _ in range(50):
            d.echo(b"x")
    d.close()


def test_garbage_before_first_frame(tcp):
    dev, srv = tcp
    port = serial.serial_for_url(srv.url, timeout=0.05)
    port.write(b"\xa5\x5a\x01garbage" + bytes(range(256)) + b"\xa5")
    with Device(port, timeout=TIMEOUT) as d:
        assert d.hello().name == "emulator"
        assert d.echo(b"ok") == b"ok"


def test_wrong_version_and_too_long_and_unknown(tcp):
    dev, srv = tcp
    got = raw_exchange(srv.url, P.frame(Msg.HELLO, 41, b"", version=2) + P.frame(Msg.ECHO, 42, bytes(5000))
                       + P.frame(0x55, 43) + P.frame(Msg.HELLO | P.REPLY, 44) + P.frame(Msg.HELLO, 45), 5)
    assert [(e.type, e.seq) for e in got] == [(0xFF, 41), (0xFF, 42), (0xFF, 43), (0xFF, 44), (0x81, 45)]
    errs = [P.unpack_error(e.payload) for e in got[:4]]
    assert errs == [P.ErrorReply(Msg.HELLO, Err.VERSION, 2), P.ErrorReply(Msg.ECHO, Err.TOO_LONG, 4096),
                    P.ErrorReply(0x55, Err.UNKNOWN, 0x55), P.ErrorReply(0x81, Err.UNKNOWN, 0x81)]
    assert all(e.version == 1 for e in got)


def test_step_out_of_range_changes_nothing(tcp, models):
    dev, srv = tcp
    with connect(srv.url, timeout=TIMEOUT) as d:
        d.run(random_events(1, d.info.n_inputs, 10))
        v0 = [d.read_state(l, 0) for l in range(d.info.n_layers)]
        steps0 = d.stats().steps
        bad = P.pack_step_request(1, [P.StepIn([0, 1]), P.StepIn([d.info.n_inputs])])
        with pytest.raises(DeviceError) as e:            # the second step is bad: the first does not run
            d.request(Msg.STEP, bad)
        assert (e.value.code_name, e.value.detail) == ("STEP", S.ERR_INPUT_INDEX)
        assert "STEP" in str(e.value) and "nothing ran" in str(e.value)
        with pytest.raises(InputError, match="nothing was sent"):   # the client checks a run up front
            d.run([[0, 1]] * 3000 + [[d.info.n_inputs]])
        assert [np.array_equal(a, d.read_state(l, 0)) for l, a in enumerate(v0)] == [True] * len(v0)
        assert d.stats().steps == steps0


# ------------------------------------------------------------------ every refusal, byte for byte
def _ask(dev, type_, payload=b"", seq=9):
    ev = P.parse_all(dev.feed(P.frame(type_, seq, payload)))
    assert len(ev) == 1 and ev[0].seq == seq
    return ev[0]


def _err(dev, type_, payload=b""):
    ev = _ask(dev, type_, payload)
    assert ev.type == Msg.ERROR, P.msg_name(ev.type)
    e = P.unpack_error(ev.payload)
    assert e.request == type_
    return Err(e.code).name, e.detail


def test_refusals_by_feed(models):
    dev = EmulatedDevice(models[1], max_payload=256, max_steps=4)
    n_in, n_out = dev.info.n_inputs, dev.info.n_outputs
    assert _err(dev, Msg.HELLO, b"x") == ("MALFORMED", 0)
    assert _err(dev, Msg.STATS, b"\x02") == ("MALFORMED", 0)
    assert _err(dev, Msg.STATS, b"") == ("MALFORMED", 0)
    assert _err(dev, Msg.LEARN, b"") == ("UNSUPPORTED", 0)
    step = lambda flags, steps: P.pack_step_request(flags, steps)   # noqa: E731
    assert _err(dev, Msg.STEP, b"\x08\x01\x00\x00\x00\x00") == ("MALFORMED", 0)
    assert _err(dev, Msg.STEP, step(0, [])) == ("MALFORMED", 1)
    assert _err(dev, Msg.STEP, step(0, [P.StepIn([])] * 5)) == ("MALFORMED", 1)
    too_many = P.step_reply_bound(4, n_out, 3) > 256
    if too_many:
        assert _err(dev, Msg.STEP, step(3, [P.StepIn([])] * 4)) == ("REPLY_TOO_BIG", 256)
    assert _err(dev, Msg.STEP, step(0, [P.StepIn([n_in])])) == ("STEP", S.ERR_INPUT_INDEX)
    assert _err(dev, Msg.STEP, step(0, [P.StepIn([0])])[:-1]) == ("MALFORMED", 6)
    assert _err(dev, Msg.STEP, step(0, [P.StepIn([0])]) + b"\x00") == ("MALFORMED", 8)
    # a STEP refusal in an earlier record comes before a malformation in a later one
    assert _err(dev, Msg.STEP, step(0, [P.StepIn([n_in]), P.StepIn([0])])[:-1]) == ("STEP", S.ERR_INPUT_INDEX)
    assert _err(dev, Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, b"ab")) == ("NO_UPLOAD", 0)
    assert _err(dev, Msg.UPLOAD_COMMIT) == ("NO_UPLOAD", 0)
    assert _err(dev, Msg.UPLOAD_CHUNK, b"\x00") == ("MALFORMED", 0)
    assert _ask(dev, Msg.UPLOAD_BEGIN, P.pack_upload_begin(10, 0)).type == Msg.UPLOAD_BEGIN | P.REPLY
    assert _err(dev, Msg.UPLOAD_CHUNK, P.pack_upload_chunk(3, b"ab")) == ("OFFSET", 0)
    assert _err(dev, Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, bytes(11))) == ("MALFORMED", 4)
    assert _err(dev, Msg.UPLOAD_COMMIT) == ("INCOMPLETE", 0)
    assert P.unpack_u32(_ask(dev, Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, bytes(10))).payload) == 10
    assert _err(dev, Msg.UPLOAD_COMMIT) == ("UPLOAD_CRC", 0)
    assert _err(dev, Msg.UPLOAD_COMMIT) == ("NO_UPLOAD", 0)          # that commit ended the upload
    assert _ask(dev, Msg.UPLOAD_BEGIN, P.pack_upload_begin(10, P.crc32(bytes(10)))).type == 0xA0
    _ask(dev, Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, bytes(10)))
    assert _err(dev, Msg.UPLOAD_COMMIT) == ("MODEL", S.ERR_BLOB_SIZE)   # 10 bytes
    assert _ask(dev, Msg.UPLOAD_ABORT).payload == b""
    assert _err(dev, Msg.UPLOAD_BEGIN, P.pack_upload_begin(2**31, 0)) == ("TOO_BIG", 1 << 20)
    n_layers = dev.info.n_layers
    assert _err(dev, Msg.READ_WEIGHTS, P.pack_read_weights(n_layers, 0, 0, 1)) == ("ARGUMENT", n_layers)
    assert _err(dev, Msg.READ_WEIGHTS, P.pack_read_weights(0, 2, 0, 1)) == ("ARGUMENT", 2)
    assert _err(dev, Msg.READ_WEIGHTS, P.pack_read_weights(0, 0, 10**6, 1)) == ("ARGUMENT", 10**6)
    assert _err(dev, Msg.READ_STATE, P.pack_read_state(0, 3, 0, 1)) == ("ARGUMENT", 3)
    assert _err(dev, Msg.READ_STATE, P.pack_read_state(0, 0, 0, 10**4)) == ("ARGUMENT", 0)
    assert _err(dev, Msg.READ_STATE, P.pack_read_state(0, 0, 0, 1)[:-1]) == ("MALFORMED", 7)
    assert dev.stats.frames_refused == 11
    no_up = EmulatedDevice(models[1], upload_capacity=0)
    assert not no_up.info.has(P.Cap.UPLOAD)
    assert _err(no_up, Msg.UPLOAD_BEGIN, P.pack_upload_begin(1, 0)) == ("UNSUPPORTED", 0)


@pytest.mark.skipif(not __import__("shutil").which("gcc"), reason="needs gcc for the host-built C runtime")
def test_blob_reader_refuses_what_the_c_runtime_refuses(models):
    """read_blob's status equals esnn_model_from_blob's on damaged and inconsistent blobs."""
    from firmware_gen import hostlib

    lib = hostlib.runtime_lib()
    good = B.pack(models[3])
    t = B.unpack(good)
    cases = [good, good[:10], b"X" + good[1:], good[:-1] + bytes([good[-1] ^ 1]), good[:-8] + good[-4:]]
    for field, delta in ((K.L_N_IN, 1), (K.L_V_OFF, 1), (K.L_KIND, 9), (K.L_W_OFF, 10**6), (K.L_N_OUT, -1)):
        bad = B.modified(t)
        bad.ltab[-1, field] += delta
        cases.append(B.pack_tables(bad))
    bad = B.modified(t)
    bad.ptab[0, K.P_THETA] = 0
    cases.append(B.pack_tables(bad))
    cases.append(B.pack_tables(t, version=2))
    for data in cases:
        st_c = hostlib.load_blob(lib, data)[0]
        try:
            B.read_blob(data)
            st_py = S.OK
        except B.BlobError as e:
            st_py = e.status
        assert st_py == st_c, (S.name(st_py), S.name(st_c))


def _conversation(model, other, n_inputs, max_payload):
    """A request stream touching every message and refusal; sequence numbers 1, 2, ..."""
    reqs = []

    def q(t, p=b"", **kw):
        reqs.append(P.frame(t, len(reqs) + 1, p, **kw))

    q(Msg.HELLO)
    q(Msg.STATS, b"\x00")
    ev = random_events(1, n_inputs, 30)
    for i in range(0, 30, 5):
        q(Msg.STEP, P.pack_step_request(7 if i % 2 else 1, [P.StepIn(e) for e in ev[i:i + 5]]))
    for bad in (P.pack_step_request(0, [P.StepIn([n_inputs])]), P.pack_step_request(0, [P.StepIn([0] * 101)]),
                P.pack_step_request(8, [P.StepIn([0])]), P.pack_step_request(0, []),
                P.pack_step_request(0, [P.StepIn([0])])[:-1], P.pack_step_request(0, [P.StepIn([0])]) + b"\x00",
                P.pack_step_request(3, [P.StepIn([])] * 8), P.pack_step_request(1, [P.StepIn([1], 2, -3)])):
        q(Msg.STEP, bad)
    for t, p in ((Msg.HELLO, b"x"), (Msg.STATS, b"\x02"), (0x55, b""), (Msg.LEARN, b""), (Msg.ECHO, b"abc"),
                 (Msg.ECHO, bytes(max_payload + 1)), (Msg.RESET, b"")):
        q(t, p)
    q(Msg.HELLO, version=2)
    for layer in range(len(model.network.layers) + 1):
        for which in (0, 1, 2):
            q(Msg.READ_WEIGHTS, P.pack_read_weights(layer, which, 0, 5))
            q(Msg.READ_WEIGHTS, P.pack_read_weights(layer, which, 3, 60000))
        for field in (0, 1, 2, 3):
            q(Msg.READ_STATE, P.pack_read_state(layer, field, 0, 3))
            q(Msg.READ_STATE, P.pack_read_state(layer, field, 1, 500))
    q(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, b"ab"))
    q(Msg.UPLOAD_COMMIT)
    blob = B.pack(other)
    q(Msg.UPLOAD_BEGIN, P.pack_upload_begin(len(blob), P.crc32(blob)))
    q(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(5, b"ab"))
    for o in range(0, len(blob), max_payload - 4):
        q(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(o, blob[o:o + max_payload - 4]))
    q(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(len(blob), b"a"))
    q(Msg.UPLOAD_COMMIT)
    q(Msg.HELLO)
    q(Msg.STEP, P.pack_step_request(3, [P.StepIn(e) for e in random_events(2, other.network.n_inputs, 5)]))
    q(Msg.STATS, b"\x01")
    q(Msg.STATS, b"\x00")
    q(Msg.UPLOAD_ABORT)
    q(Msg.UPLOAD_BEGIN, P.pack_upload_begin(10, 0))
    q(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, bytes(10)))
    q(Msg.UPLOAD_COMMIT)
    q(Msg.UPLOAD_BEGIN, P.pack_upload_begin(1 << 20, 0))
    return b"\x00\xa5garbage" + b"".join(reqs), len(reqs)


@pytest.mark.skipif(not __import__("shutil").which("gcc"), reason="needs gcc for the host-built C device")
def test_emulator_replies_equal_the_c_link_byte_for_byte(models):
    """The same request stream to esnn_link.c (built for the host) and to the emulated device: the
    reply bytes are identical (the two implementations of docs/protocol.md agree)."""
    hostdevice = pytest.importorskip("firmware_gen.hostdevice")
    for model, other in ((models[1], models[3]), (models[4], models[2])):
        opts = dict(max_payload=512, max_steps=8, upload=1 << 16, max_events=100, name="x")
        emu = EmulatedDevice(model, max_payload=512, max_steps=8, upload_capacity=1 << 16, max_events=100,
                             name="x")
        data, n = _conversation(model, other, model.network.n_inputs, 512)
        want = emu.feed(data)
        assert len(P.parse_all(want)) == n
        got = hostdevice.run_stream(hostdevice.host_device(model), data, **opts)
        for c, e in zip(P.parse_all(got), P.parse_all(want)):
            assert c == e, (c.seq, P.msg_name(c.type), P.msg_name(e.type))
        assert got == want
    # and on damaged streams: flipped bits, lost and inserted bytes, fake sync words
    exe, rng = hostdevice.host_device(models[1]), np.random.default_rng(0)
    data, _ = _conversation(models[1], models[3], models[1].network.n_inputs, 512)
    for _ in range(12):
        bad = _mutate(rng, data)
        emu = EmulatedDevice(models[1], max_payload=512, max_steps=8, upload_capacity=1 << 16, max_events=100,
                             name="x")
        assert hostdevice.run_stream(exe, bad, **opts) == emu.feed(bad)


def _mutate(rng, data):
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 12))):
        op, i = int(rng.integers(4)), int(rng.integers(len(out)))
        if op == 0:
            out[i] ^= 1 << int(rng.integers(8))
        elif op == 1:
            del out[i:i + int(rng.integers(1, 20))]
        elif op == 2:
            out[i:i] = rng.integers(0, 256, int(rng.integers(1, 30)), dtype=np.uint8).tobytes()
        else:
            out[i:i] = b"\xa5\x5a" + rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    return bytes(out)


# ------------------------------------------------------------------ the CLI, end to end
def test_cli_emulate_serves_until_interrupted(tmp_path, models):
    path = tmp_path / "m.esnn"
    modelfile.save(models[2], path)
    proc = subprocess.Popen([sys.executable, "-m", "edgesnn", "emulate", str(path), "--listen",
                             "tcp://127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:")
        with connect(url, timeout=5.0) as d:
            assert d.info.model_hash == B.model_hash_bytes(models[2])
            check_against_simulator(d, models[2], random_events(9, d.info.n_inputs, 20))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read()
        assert "connection from" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-m", "edgesnn", "emulate", str(path), "--listen", "udp://x:1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "tcp://HOST:PORT" in bad.stderr
