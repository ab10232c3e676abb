"""The device link in C (firmware_gen/runtime/esnn_link.c, docs/protocol.md) on emulated boards and on
the host, against the Python side (edgesnn.device: the client and the emulated device).

- On qemu-mps2-an386, qemu-netduinoplus2 and qemu-lm3s6965evb (UART on TCP, edgesnn.device.connect):
  HELLO names the board and the model hash; STEP outputs equal Simulator.fixed and the emulated device
  step by step (class, spikes, readout values); READ_WEIGHTS / READ_STATE and the STATS counters equal
  the emulated device's; an upload of a second model swaps it (then outputs equal a fresh simulator of
  the new model); RESET.
- Faults on the same boards, over a raw socket: garbage before the first frame, a bad header, a
  corrupted frame (CRC, nothing applied), a wrong version, a frame longer than max_payload, an upload
  interrupted at every chunk boundary (abandoned, aborted, or the connection closed: the old model keeps
  running), a blob too big, a corrupt blob (MODEL), a wrong upload CRC, a state too big for the board,
  and the UART ring overrun by a long frame arriving while the board computes (a CRC error or the frame
  received; the link keeps working).
- The host build of esnn_link.c (firmware_gen/boards/host_main.c, under ASan + UBSan) answers random
  request streams, garbage and faults included, with exactly the bytes of the emulated device.
- libFuzzer on esnn_link_feed (firmware_gen/fuzz/link_fuzz.c), a bounded run.
"""
import os
import socket
import struct
import time
import zlib

import numpy as np
import pytest
from conftest import need

from edgesnn.model import presets
from edgesnn.model.quantize import quantize
from edgesnn.simulator import Simulator
from firmware_gen import blob as B
from firmware_gen import build, export, hostdevice, profiles, qemu

from netgen import random_network

P = pytest.importorskip("edgesnn.device.protocol")
from edgesnn.device import DeviceError, EmulatedDevice, connect

BOARDS = ["qemu-mps2-an386", "qemu-netduinoplus2", "qemu-lm3s6965evb"]
Msg, Err = P.Msg, P.Err
ERR_INPUT_INDEX, ERR_MODEL, ERR_BLOB_CRC = -1, -4, -8


@pytest.fixture(scope="module")
def emu():
    need("arm-none-eabi-gcc", "arm-none-eabi-size", "make", "qemu-system-arm")


@pytest.fixture(scope="module")
def models():
    a = quantize(presets.make("w2"))                              # recurrent + dense, spiking output
    b = quantize(random_network(11, conv=True, readout=True))     # conv, pool, flatten, LI readout
    return a, b


_FIRMWARE = {}


@pytest.fixture
def firmware(emu, models, tmp_path_factory):
    def get(board):
        if board not in _FIRMWARE:
            d = tmp_path_factory.mktemp(board)
            res = export.export_project(models[0], board, d)
            rep = build.build_project(d)
            assert rep["fits"], rep
            _FIRMWARE[board] = (rep["elf"], res["app"])
        return _FIRMWARE[board]
    return get


def small_ring_elf(model, board, d):
    """The app firmware with a 512-byte receive ring (the ring the board glue has without the device
    link's sizing), so that a burst can overrun it while the core computes."""
    export.export_project(model, board, d)
    cfg = d / "board" / "board_config.h"
    text = cfg.read_text()
    assert "#define BOARD_RX_RING_SIZE " in text
    cfg.write_text("\n".join("#define BOARD_RX_RING_SIZE 512u" if line.startswith("#define BOARD_RX_RING_SIZE ")
                             else line for line in text.splitlines()) + "\n")
    return build.build_project(d)["elf"]


def emulated(model, app):
    """The emulated device configured like the board (so that HELLO and the limits agree)."""
    return EmulatedDevice(model, upload_capacity=app["upload_bytes"], max_payload=app["max_payload"],
                          max_steps=app["max_steps"], state_capacity=app["state_bytes"],
                          max_events=app["max_events"])


def random_steps(rng, n_inputs, n, rate=0.2):
    return [np.flatnonzero(rng.random(n_inputs) < rate).tolist() for _ in range(n)]


def same_outputs(a, b, what):
    assert np.array_equal(a.cls, b.cls), what
    assert all(np.array_equal(x, y) for x, y in zip(a.spikes, b.spikes)), what
    assert np.array_equal(a.v, b.v), what


# ================================================================== boards, through the client

@pytest.mark.parametrize("board", BOARDS)
def test_board_speaks_the_protocol(firmware, models, board):
    ma, mb = models
    elf, app = firmware(board)
    ref = emulated(ma, app)
    rng = np.random.default_rng(5)
    # -icount: SysTick counts instructions, so every step's cycle count is above 0 (on the host clock a
    # short step could read 0 ticks on a loaded machine)
    with qemu.Session(elf, board, icount_shift=0, tcp=True) as s, ref.serve_tcp() as srv, \
            connect(s.url, timeout=10) as dev, connect(srv.url) as edev:
        info = dev.info
        assert info.name == board and info.model_hash == B.model_hash_bytes(ma)
        assert (info.n_inputs, info.n_outputs, info.n_layers) == (64, ma.network.n_outputs, 2)
        assert (info.max_payload, info.upload_capacity, info.max_steps) == \
            (app["max_payload"], app["upload_bytes"], app["max_steps"])
        assert info.has(P.Cap.UPLOAD | P.Cap.CYCLES | P.Cap.READ_WEIGHTS | P.Cap.READ_STATE | P.Cap.READOUT)
        assert not info.has(P.Cap.LEARN)

        steps = random_steps(rng, 64, 25) + [list(range(64)) * 3, []]
        out = dev.run(steps, spikes=True, readout=True, cycles=True)
        same_outputs(out, edev.run(steps, spikes=True, readout=True), board)
        sim = Simulator.fixed(ma)
        for t, ev in enumerate(steps):
            assert out.spikes[t].tolist() == sim.step(ev).tolist(), t
            assert np.array_equal(out.v[t], sim.v(-1)), t
        assert (out.cycles > 0).all()
        # weights: the ends of every matrix (the emulated UART moves a byte at a time: not all of them)
        for layer, which, n in ((0, 0, 64 * 128), (0, 1, 128 * 128), (1, 0, 128 * 12)):
            for first in (0, n - 1000):
                req = P.pack_read_weights(layer, which, first, 1000)
                assert dev.request(Msg.READ_WEIGHTS, req) == edev.request(Msg.READ_WEIGHTS, req)
        for layer in range(2):
            for field in range(3):
                assert np.array_equal(dev.read_state(layer, field), edev.read_state(layer, field))
        st, est = dev.stats(clear=True), edev.stats(clear=True)
        for f in ("steps", "input_events", "output_spikes", "synaptic_ops"):
            assert getattr(st, f) == getattr(est, f), f
        assert st.cycles == out.cycles.astype(np.int64).sum() and st.bytes_dropped == 0

        with pytest.raises(DeviceError) as e:                     # out of range: refused, nothing run
            dev.request(Msg.STEP, step_payload([[3], [64]]))
        assert e.value.code == Err.STEP and e.value.detail == ERR_INPUT_INDEX
        assert dev.stats().steps == 0

        # an upload swaps the model: outputs of a fresh simulator of the new model
        assert dev.upload(mb) == B.model_hash_bytes(mb) == edev.upload(mb)
        assert dev.info.model_hash == B.model_hash_bytes(mb) and dev.info.n_layers == len(mb.network.layers)
        n_in = int(mb.network.n_inputs)
        steps = random_steps(rng, n_in, 30, 0.3)
        out = dev.run(steps, spikes=True, readout=True)
        same_outputs(out, edev.run(steps, spikes=True, readout=True), f"{board} after the upload")
        sim = Simulator.fixed(mb)
        for t, ev in enumerate(steps):
            assert out.spikes[t].tolist() == sim.step(ev).tolist(), t
        for layer in range(len(mb.network.layers)):
            for field in range(3):
                assert np.array_equal(dev.read_state(layer, field), edev.read_state(layer, field))
            assert np.array_equal(dev.read_weights(layer, 0), edev.read_weights(layer, 0))
        dev.reset()
        edev.reset()
        steps = random_steps(rng, n_in, 5, 0.3)
        same_outputs(dev.run(steps, readout=True), edev.run(steps, readout=True), f"{board} after RESET")


# ================================================================== boards, faults on a raw link

class Raw:
    """Frames over a plain TCP connection, replies through protocol.FrameParser."""

    def __init__(self, url, max_payload):
        host, port = url[len("socket://"):].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.parser = P.FrameParser(max_payload)
        self.events = []
        self.seq = 100

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def next_seq(self):
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq

    def event(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            assert data, "the board closed the link"
            self.events += self.parser.feed(data)
        return self.events.pop(0)

    def wait_for(self, seq, timeout=5.0):
        """The reply to ``seq`` (earlier replies are dropped), or None."""
        while True:
            ev = self.event(timeout)
            if ev is None or ev.seq == seq:
                return ev

    def request(self, type_, payload=b"", version=1, timeout=5.0):
        seq = self.next_seq()
        self.send(P.frame(type_, seq, payload, version))
        ev = self.wait_for(seq, timeout)
        assert ev is not None, f"no reply to {P.msg_name(type_)}"
        return ev

    def ok(self, type_, payload=b""):
        ev = self.request(type_, payload)
        assert isinstance(ev, P.Frame) and ev.type == type_ | P.REPLY, (P.msg_name(type_), ev)
        return ev.payload

    def error(self, type_, payload=b"", version=1):
        ev = self.request(type_, payload, version)
        if isinstance(ev, P.Rejected):
            return ev.reason, ev.detail
        assert ev.type == Msg.ERROR, (P.msg_name(type_), ev)
        e = P.unpack_error(ev.payload)
        assert e.request == type_
        return e.code, e.detail

    def hash(self):
        return P.unpack_info(self.ok(Msg.HELLO)).model_hash


def step_payload(steps, flags=P.STEP_SPIKES | P.STEP_READOUT):
    return P.pack_step_request(flags, [P.StepIn(s) for s in steps])


def big_state_model():
    """A dense layer of 3000 neurons: a blob of a few KiB, a state of about 42 KiB."""
    from edgesnn.model.spec import Dense, Network, Neuron
    rng = np.random.default_rng(1)
    net = Network((2,), [Dense(rng.normal(0, 0.5, (3000, 2)), neuron=Neuron(kind="lif"))], dt=1e-3, seed=1)
    return quantize(net)


@pytest.mark.parametrize("board", BOARDS)
def test_board_faults(firmware, models, board, tmp_path):
    ma, mb = models
    elf, app = firmware(board)
    mp, cap = app["max_payload"], app["upload_bytes"]
    ha, hb = B.model_hash_bytes(ma), B.model_hash_bytes(mb)
    rng = np.random.default_rng(9)
    with qemu.Session(elf, board, tcp=True) as s:
        link = Raw(s.url, mp)
        # garbage before the first frame, and a sync pattern whose header check fails, then a HELLO
        garbage = bytes(b for b in rng.integers(0, 256, 300, dtype=np.uint8).tobytes() if b != 0xA5)
        seq = link.next_seq()
        link.send(garbage + b"\xa5\x5a\x01\x01\x00\x00\x00\x00\x00\x00" + P.frame(Msg.HELLO, seq))
        ev = link.wait_for(seq)
        for _ in range(20):                      # a board may drop bytes until its UART runs: ask again
            if ev is not None:
                break
            seq = link.next_seq()
            link.send(P.frame(Msg.HELLO, seq))
            ev = link.wait_for(seq, 0.5)
        assert ev is not None and ev.type == Msg.HELLO | P.REPLY
        assert P.unpack_info(ev.payload).model_hash == ha

        # a corrupted frame is refused with CRC and nothing is applied
        v0 = link.ok(Msg.READ_STATE, P.pack_read_state(0, 0, 0, 16))
        bad = bytearray(P.frame(Msg.STEP, link.next_seq(), step_payload([list(range(0, 64, 3))])))
        bad[14] ^= 0x10
        link.send(bytes(bad))
        ev = link.event()
        assert isinstance(ev, P.Frame) and ev.type == Msg.ERROR and P.unpack_error(ev.payload).code == Err.CRC
        assert link.ok(Msg.READ_STATE, P.pack_read_state(0, 0, 0, 16)) == v0
        assert P.unpack_stats(link.ok(Msg.STATS, b"\x00")).steps == 0
        # wrong version, too long, unknown, malformed, unsupported, a bad argument
        assert link.error(Msg.HELLO, version=2) == (Err.VERSION, 2)
        assert link.error(Msg.ECHO, b"x" * (mp + 1)) == (Err.TOO_LONG, mp)
        assert link.ok(Msg.ECHO, b"y" * mp) == b"y" * mp
        assert link.error(0x7E) == (Err.UNKNOWN, 0x7E)
        assert link.error(Msg.STATS, b"\x00\x00") == (Err.MALFORMED, 1)
        assert link.error(Msg.LEARN, b"\x00") == (Err.UNSUPPORTED, 0)
        assert link.error(Msg.READ_STATE, P.pack_read_state(9, 0, 0, 1)) == (Err.ARGUMENT, 9)

        # uploads refused: too big, wrong CRC, corrupt blob, state too big
        assert link.error(Msg.UPLOAD_BEGIN, P.pack_upload_begin(cap + 1, 0)) == (Err.TOO_BIG, cap)
        blob = B.pack(mb)

        def upload(data, crc=None, chunk=256, stop=None, commit=True):
            link.ok(Msg.UPLOAD_BEGIN, P.pack_upload_begin(len(data), zlib.crc32(data) if crc is None else crc))
            for k, off in enumerate(range(0, len(data), chunk)):
                if stop is not None and k == stop:
                    return None
                got = P.unpack_u32(link.ok(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(off, data[off:off + chunk])))
                assert got == min(len(data), off + chunk)
            return link.request(Msg.UPLOAD_COMMIT) if commit else None

        assert link.error(Msg.UPLOAD_COMMIT) == (Err.NO_UPLOAD, 0)
        ev = upload(blob, crc=zlib.crc32(blob) ^ 1)
        assert P.unpack_error(ev.payload).code == Err.UPLOAD_CRC
        damaged = bytearray(blob)
        damaged[200] ^= 0x40                     # inside the tables: the blob's own CRC-32 catches it
        ev = upload(bytes(damaged))
        assert (P.unpack_error(ev.payload).code, P.unpack_error(ev.payload).detail) == (Err.MODEL, ERR_BLOB_CRC)
        bad_kind = bytearray(blob)
        bad_kind[96:100] = struct.pack("<i", 7)  # layer 0's kind: no such layer; the blob's CRC made right
        bad_kind[-4:] = struct.pack("<I", zlib.crc32(bytes(bad_kind[:-4])))
        ev = upload(bytes(bad_kind))
        assert (P.unpack_error(ev.payload).code, P.unpack_error(ev.payload).detail) == (Err.MODEL, ERR_MODEL)
        big = B.pack(big_state_model())
        need_bytes = 4 * B.read_blob(big).state_words + 4 * 3000
        if len(big) <= cap and need_bytes > app["state_bytes"]:
            ev = upload(big)
            assert P.unpack_error(ev.payload).code == Err.STATE_TOO_BIG
            assert P.unpack_error(ev.payload).detail == need_bytes
        assert link.hash() == ha

        # an upload interrupted at every chunk boundary: abandoned, aborted, or the connection closed
        n_chunks = -(-len(blob) // 256)
        for k in range(n_chunks + 1):
            upload(blob, stop=k, commit=False)
            if k < n_chunks:
                e = link.error(Msg.UPLOAD_COMMIT)
                assert e == (Err.INCOMPLETE, min(len(blob), 256 * k))
            if k % 3 == 1:
                link.ok(Msg.UPLOAD_ABORT)
                assert link.error(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(0, b"x")) == (Err.NO_UPLOAD, 0)
            elif k % 3 == 2:
                # a disconnect in the middle of a chunk frame: the board's parser is left inside it and
                # the next connection's first bytes complete that frame (a CRC error, not acted on)
                link.send(P.frame(Msg.UPLOAD_CHUNK, 1, P.pack_upload_chunk(256 * k, blob[256 * k:256 * k + 256]))[:40])
                link.close()
                link = Raw(s.url, mp)
                link.send(bytes(300))               # completes the cut frame (CRC), then scanned away
                seq = link.next_seq()
                for _ in range(20):
                    link.send(P.frame(Msg.HELLO, seq))
                    ev = link.wait_for(seq, 0.5)
                    if ev is not None and isinstance(ev, P.Frame) and ev.type == Msg.HELLO | P.REPLY:
                        break
                    seq = link.next_seq()
                else:
                    raise AssertionError("no HELLO after a reconnect")
            assert link.hash() == ha, k
        # the old model still runs: from a RESET its outputs are the simulator's
        link.ok(Msg.RESET)
        sim = Simulator.fixed(ma)
        ev_steps = random_steps(rng, 64, 5)
        _, outs = P.unpack_step_reply(link.ok(Msg.STEP, step_payload(ev_steps)), 12)
        assert [o.spikes.tolist() for o in outs] == [sim.step(e).tolist() for e in ev_steps]

        # the whole upload in one go works after all that
        ev = upload(blob, chunk=mp - 4)
        assert ev.type == Msg.UPLOAD_COMMIT | P.REPLY and P.unpack_commit_reply(ev.payload) == hb
        assert link.hash() == hb

        assert link.hash() == hb
        link.close()

    # the receive ring overrun: long frames arrive while the board computes long STEPs. QEMU's CMSDK and
    # PL011 UARTs hold input back until the core reads their data register, so the ring overflows there
    # only when a loaded host delays the firmware's main loop behind its interrupt handler; its STM32
    # USART does not, and with its core slowed down (-icount shift=8) the 512-byte ring of the
    # netduinoplus2 (built with the old 512-byte ring here; the app's holds a whole frame) overflows (most
    # of the time: up to three rounds). Either way every frame is answered,
    # or refused with a CRC error, or (its header lost) not answered, and the link recovers.
    slow = 8 if board == "qemu-netduinoplus2" else None
    if slow:   # the ring of the app firmware holds a whole frame: give this one the old 512 bytes
        elf = small_ring_elf(ma, board, tmp_path / "ring512")
    with qemu.Session(elf, board, tcp=True, icount_shift=slow) as s:
        link = Raw(s.url, mp)
        seq = link.next_seq()
        for _ in range(20):
            link.send(P.frame(Msg.HELLO, seq))
            if link.wait_for(seq, 0.5) is not None:
                break
        work = [list(range(64))] * min(app["max_steps"], (mp - 3) // (3 + 2 * 64))
        echo = bytes(rng.integers(0, 256, mp, dtype=np.uint8))
        for _round in range(3):
            link.ok(Msg.STATS, b"\x01")
            seqs, burst = {}, []
            for k in range(3):
                s_seq, e_seq = link.next_seq(), link.next_seq()
                seqs[s_seq], seqs[e_seq] = Msg.STEP, Msg.ECHO
                burst += [P.frame(Msg.STEP, s_seq, step_payload(work, 0)), P.frame(Msg.ECHO, e_seq, echo)]
            link.send(b"".join(burst))
            replies = {}
            while len(replies) < len(seqs):
                ev = link.event(1.5)
                if ev is None:
                    break
                replies[ev.seq] = ev
            link.send(bytes(3 * mp + 50))            # completes a frame left short by lost bytes
            for _ in range(20):
                seq = link.next_seq()
                link.send(P.frame(Msg.HELLO, seq))
                ev = link.wait_for(seq, 0.5)
                if isinstance(ev, P.Frame) and ev.type == Msg.HELLO | P.REPLY:
                    break
            else:
                raise AssertionError("the link did not recover after the overrun")
            stats = P.unpack_stats(link.ok(Msg.STATS, b"\x00"))
            errors = [P.unpack_error(r.payload).code for r in replies.values() if r.type == Msg.ERROR]
            if stats.bytes_dropped == 0:
                assert len(replies) == len(seqs) and not errors
                assert all(r.type == seqs[q] | P.REPLY for q, r in replies.items())
                assert all(r.payload == echo for q, r in replies.items() if seqs[q] == Msg.ECHO)
            else:   # bytes lost: a damaged frame is refused with CRC (perhaps only once the padding
                # completes it) or, its header lost, scanned away unanswered; every other frame is answered
                assert set(errors) <= {Err.CRC} and (stats.frames_refused >= 1 or len(replies) < len(seqs))
                answered = [q for q, r in replies.items() if r.type == seqs[q] | P.REPLY]
                assert all(replies[q].payload == echo for q in answered if seqs[q] == Msg.ECHO)
            if board != "qemu-netduinoplus2" or stats.bytes_dropped > 0:
                break
        if board == "qemu-netduinoplus2":
            assert stats.bytes_dropped > 0, "the STM32 USART did not overrun the ring: the test lost its point"
        assert link.hash() == ha
        link.close()


# ================================================================== the host build against the emulator

HOST_OPTS = dict(max_payload=1024, max_events=300, max_steps=16, upload=1 << 16, state=1 << 16,
                 name="emulator", clock=0)


def random_stream(rng, model_blobs, n_inputs_of, n_frames=120):
    """Requests of every type with random (mostly valid) contents, whole uploads (a model of
    ``model_blobs``), garbage, corrupted and cut frames. ``n_inputs_of``: the fewest inputs of the models."""
    out = []
    blob = model_blobs[int(rng.integers(len(model_blobs)))]
    up = 0
    for i in range(n_frames):
        seq = int(rng.integers(65536))
        r = rng.random()
        n_in = n_inputs_of
        kind = int(rng.integers(17))
        if kind == 16:                                            # a whole upload, sometimes damaged
            b = model_blobs[int(rng.integers(len(model_blobs)))]
            size = int(rng.integers(100, 1021))
            frames = [P.frame(Msg.UPLOAD_BEGIN, seq, P.pack_upload_begin(len(b), zlib.crc32(b)))]
            frames += [P.frame(Msg.UPLOAD_CHUNK, seq + 1 + k, P.pack_upload_chunk(off, b[off:off + size]))
                       for k, off in enumerate(range(0, len(b), size))]
            frames.append(P.frame(Msg.UPLOAD_COMMIT, seq + 999))
            if rng.random() < 0.3:
                k = int(rng.integers(len(frames)))
                f = bytearray(frames[k])
                f[int(rng.integers(len(f)))] ^= 1 << int(rng.integers(8))
                frames[k] = bytes(f)
            out += frames
            continue
        if kind == 0:
            payload, t = b"", Msg.HELLO
        elif kind == 1:
            payload, t = b"", Msg.RESET
        elif kind == 2:
            payload, t = bytes([int(rng.integers(3))]), Msg.STATS
        elif kind == 3:
            payload, t = bytes(rng.integers(0, 256, int(rng.integers(0, 60)), dtype=np.uint8)), Msg.ECHO
        elif kind in (4, 5, 6):
            steps = [P.StepIn(rng.integers(0, n_in + (1 if rng.random() < 0.05 else 0),
                                           int(rng.integers(0, 12))).tolist(),
                              label=int(rng.integers(10)) if rng.random() < 0.2 else None,
                              reward=int(rng.integers(-5, 5)) if rng.random() < 0.2 else None)
                     for _ in range(int(rng.integers(0 if rng.random() < 0.05 else 1, 5)))]
            payload, t = P.pack_step_request(int(rng.integers(8)), steps), Msg.STEP
        elif kind == 7:
            payload, t = P.pack_upload_begin(len(blob) if rng.random() < 0.9 else len(blob) * 100,
                                             zlib.crc32(blob) ^ (1 if rng.random() < 0.1 else 0)), Msg.UPLOAD_BEGIN
            up = 0
        elif kind in (8, 9):
            n = int(rng.integers(1, 1000))
            off = up if rng.random() < 0.9 else int(rng.integers(0, len(blob)))
            payload, t = P.pack_upload_chunk(off, blob[off:off + n]), Msg.UPLOAD_CHUNK
            up = min(len(blob), off + n) if off == up else up
        elif kind == 10:
            payload, t = b"", Msg.UPLOAD_COMMIT
            if up >= len(blob):
                blob = model_blobs[int(rng.integers(len(model_blobs)))]
                up = 0
        elif kind == 11:
            payload, t = b"", Msg.UPLOAD_ABORT
        elif kind == 12:
            payload, t = P.pack_read_weights(int(rng.integers(6)), int(rng.integers(3)), int(rng.integers(0, 10)),
                                             int(rng.integers(0, 40))), Msg.READ_WEIGHTS
        elif kind == 13:
            payload, t = P.pack_read_state(int(rng.integers(6)), int(rng.integers(4)), int(rng.integers(0, 4)),
                                           int(rng.integers(0, 6))), Msg.READ_STATE
        elif kind == 14:
            payload, t = bytes(rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8)), \
                int(rng.choice([0x00, 0x30, 0x7F, 0x81, 0xFF, 0x10, 0x03, 0x31, 0x20, 0x22]))
        else:
            payload, t = bytes(rng.integers(0, 256, int(rng.integers(1100, 1300)), dtype=np.uint8)), Msg.ECHO
        if r < 0.05 and payload:                                  # a payload cut or grown by one byte
            payload = payload[:-1] if rng.random() < 0.5 else payload + b"\x00"
        f = bytearray(P.frame(t, seq, payload, 2 if rng.random() < 0.03 else 1))
        r = rng.random()
        if r < 0.04:
            f[int(rng.integers(len(f)))] ^= 1 << int(rng.integers(8))    # a flipped bit anywhere
        elif r < 0.06:
            f = f[:int(rng.integers(1, len(f)))]                          # cut short
        elif r < 0.09:
            out.append(bytes(rng.integers(0, 256, int(rng.integers(1, 30)), dtype=np.uint8)))   # garbage
        out.append(bytes(f))
    return b"".join(out)


def chunked_feed(dev, data, rng):
    out, i = [], 0
    while i < len(data):
        n = int(rng.choice([1, 2, 7, 64, 500, 5000]))
        out.append(dev.feed(data[i:i + n]))
        i += n
    return b"".join(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_host_device_equals_emulator(models, seed):
    need("gcc")
    base = quantize(random_network(20 + seed, conv=seed == 2, readout=seed == 1))
    exe = hostdevice.host_device(base, sanitize=True)
    others = [B.pack(models[1]), B.pack(quantize(random_network(30 + seed))), B.pack(base)]
    rng = np.random.default_rng(seed)
    n_in = min(int(base.network.n_inputs), *(B.read_blob(b).ltab[0, 2] for b in others))   # L_N_IN
    for k in range(12):
        stream = random_stream(rng, others, n_in)
        want = chunked_feed(EmulatedDevice(base, upload_capacity=HOST_OPTS["upload"],
                                           max_payload=HOST_OPTS["max_payload"], max_steps=HOST_OPTS["max_steps"],
                                           max_events=HOST_OPTS["max_events"], state_capacity=HOST_OPTS["state"]),
                           stream, rng)
        got = hostdevice.run_stream(exe, stream, **HOST_OPTS)
        if got != want:
            a, b = P.parse_all(got), P.parse_all(want)
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise AssertionError(f"stream {k}: reply {first} differs: C {a[first] if first < len(a) else None} "
                                 f"Python {b[first] if first < len(b) else None}")
        assert len(P.parse_all(got)) > 60


def test_host_device_upload_and_steps_equal_the_simulator(models):
    """The host build, driven by the client over a pipe-backed socket pair: upload, steps, reads."""
    need("gcc")
    ma, mb = models
    rng = np.random.default_rng(3)
    with hostdevice.HostLinkDevice(ma, max_payload=512, max_steps=8) as dev:
        def req(t, payload=b""):
            seq = int(rng.integers(65536))
            dev.write(P.frame(t, seq, payload))
            head = dev.read(10)
            n = struct.unpack_from("<H", head, 6)[0]
            (ev,) = P.parse_all(head + dev.read(n + 4))
            assert ev.seq == seq
            return ev
        assert P.unpack_info(req(Msg.HELLO).payload).model_hash == B.model_hash_bytes(ma)
        blob = B.pack(mb)
        assert req(Msg.UPLOAD_BEGIN, P.pack_upload_begin(len(blob), zlib.crc32(blob))).type == 0xA0
        for off in range(0, len(blob), 508):
            assert req(Msg.UPLOAD_CHUNK, P.pack_upload_chunk(off, blob[off:off + 508])).type == 0xA1
        assert req(Msg.UPLOAD_COMMIT).payload == B.model_hash_bytes(mb)
        sim = Simulator.fixed(mb)
        for ev in random_steps(rng, int(mb.network.n_inputs), 20, 0.3):
            _, (o,) = P.unpack_step_reply(req(Msg.STEP, step_payload([ev])).payload, mb.network.n_outputs)
            assert o.spikes.tolist() == sim.step(ev).tolist() and np.array_equal(o.v, sim.v(-1))


# ================================================================== fuzzing

def test_fuzz_link_bounded(tmp_path):
    """libFuzzer + ASan + UBSan on esnn_link_feed from seeds of every message type: no crash, no report."""
    need("clang")
    exe = hostdevice.build_fuzzer()
    corpus = hostdevice.write_seeds(tmp_path / "corpus")
    secs = int(os.environ.get("EDGESNN_FUZZ_SECONDS", "8"))
    res = hostdevice.run_fuzzer(exe, corpus, max_total_time=secs, timeout=secs + 120)
    assert res["returncode"] == 0, res["log_tail"]
    assert res.get("runs", 0) > 1000 and res.get("cov", 0) > 300, res


def test_app_sizes_fit_every_profile(models):
    """The default link buffers leave the stack and the rest of RAM for every profile."""
    for prof in profiles.all_profiles():
        a = export.app_sizes(prof, models[0])
        used = a["max_payload"] * 2 + 14 + 4 * a["max_events"] + a["state_bytes"] + 2 * a["upload_bytes"]
        assert used + prof.stack_bytes < prof.ram_size, prof.name
        assert a["max_payload"] == (4096 if prof.ram_size >= 128 * 1024 else 1024)
    assert export.app_sizes(profiles.load("qemu-lm3s6965evb"), upload_bytes=1000)["upload_bytes"] == 1008
