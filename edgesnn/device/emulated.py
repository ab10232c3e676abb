"""The emulated device: the fixed-point emulator behind the wire protocol (docs/protocol.md).

    dev = EmulatedDevice(model)          # a FixedModel
    replies = dev.feed(request_bytes)    # any transport: bytes in, bytes out
    srv = dev.serve_tcp("127.0.0.1", 0)  # or dev.serve_pty(); srv.url is what a host connects to

It runs the tables of the weight blob (firmware_gen/blob.py), read back and checked exactly as the C
runtime's esnn_model_from_blob checks them, with the emulator's kernels, which agree bit for bit with
the C runtime. An upload is staged apart from the running model and swapped in one assignment.
"""
from __future__ import annotations

import os
import socket
import threading
import zlib
from dataclasses import dataclass

import numpy as np

from edgesnn.errors import InputError
from edgesnn.kernels import layout as K
from edgesnn.kernels import network as kn
from edgesnn.model.program import Program
from edgesnn.simulator import Simulator
from firmware_gen import blob as B
from firmware_gen import status as S

from . import protocol as P
from .protocol import Err, Msg

DEFAULT_UPLOAD_CAPACITY = 1 << 20
DEFAULT_MAX_STEPS = 1024
CAPS = P.Cap.UPLOAD | P.Cap.READ_WEIGHTS | P.Cap.READ_STATE | P.Cap.READOUT


class Refuse(Exception):
    """An ERROR reply: code and detail."""

    def __init__(self, code: Err, detail: int = 0):
        super().__init__(f"{code.name} {detail}")
        self.code, self.detail = code, int(detail)


def program_of(t: B.Tables) -> Program:
    """The emulator's program of some blob tables (the kernels take int64 tables)."""
    return Program(t.ltab.astype(np.int64), t.ptab.astype(np.int64), t.wa.astype(np.int8),
                   t.wb.astype(np.int16), int(t.n_vs), int(t.n_ist), True)


@dataclass(eq=False)
class Loaded:
    """A running model: its tables, simulator, hash and derived constants."""

    tables: B.Tables
    sim: Simulator
    hash: bytes
    max_events: int
    li_out: bool            # a leaky-integrator last layer: the class is argmax of v
    spiking: np.ndarray     # bool per layer: has spiking neurons (counted in output spikes)
    ops_per_event: np.ndarray   # int64 per layer: synaptic operations per input event

    @classmethod
    def of(cls, t: B.Tables, sim: Simulator | None = None) -> "Loaded":
        """``sim``: the simulator to run (a Learner's, whose int16 pool learns); default a new one."""
        sim = Simulator(program_of(t)) if sim is None else sim
        lt = sim.program.ltab
        neuron = lt[:, K.L_NEURON]
        return cls(t, sim, bytes(t.hash), int(kn.max_events(lt)), bool(neuron[-1] == K.LI),
                   (neuron != K.LI) & (neuron != K.NONE), np.array([_ops_per_event(r) for r in lt], np.int64))


def _ops_per_event(row) -> int:
    """Weights per input event of a layer (docs/protocol.md, STATS)."""
    kind = row[K.L_KIND]
    if kind in (K.DENSE, K.RECURRENT):
        return int(row[K.L_N_OUT])
    if kind == K.CONV2D:
        return int(row[K.L_OUT_C] * row[K.L_KH] * row[K.L_KW])
    return 1 if kind == K.SUMPOOL2D else 0


class EmulatedDevice:
    """A device that speaks protocol version 1 and runs the fixed-point emulator.

    ``state_capacity`` (bytes, None: unlimited) stands for the board's state memory (STATE_TOO_BIG);
    ``max_events``: input events of one step (default: as many as one request carries), lowered to the
    runtime's limits of the running model (docs/protocol.md, STEP). ``learn_rule`` (None: no learning;
    one of edgesnn.learning.RULES): the model (a FixedModel) learns with edgesnn.learning.Learner in mode
    fixed (LEARN and the teach fields of STEP), as a board exported with the same rule; ``learn_options``:
    the Learner's keyword options (center, hinge, nlms, trial), as export_project's."""

    def __init__(self, model, upload_capacity: int = DEFAULT_UPLOAD_CAPACITY, max_payload: int = 4096,
                 name: str = "emulator", max_steps: int = DEFAULT_MAX_STEPS, state_capacity: int | None = None,
                 max_events: int | None = None, learn_rule: str | None = None, learn_options: dict | None = None):
        if not 64 <= max_payload <= P.MAX_PAYLOAD_LIMIT:
            raise InputError(f"max_payload {max_payload}: a device takes payloads of 64..65535 bytes")
        if upload_capacity < 0 or upload_capacity > 0xFFFFFFFF or not 1 <= max_steps <= 0xFFFF:
            raise InputError(f"upload capacity {upload_capacity} (0..2^32-1, 0: no upload) or max steps "
                             f"{max_steps} (1..65535) out of range")
        blob = model if isinstance(model, (bytes, bytearray)) else B.pack(model)
        self.learner = None
        if learn_rule is not None:
            from edgesnn.learning.learner import Learner
            if isinstance(model, (bytes, bytearray)):
                raise InputError("a learning emulated device needs the FixedModel (a blob has no seed)")
            self.learner = Learner(model, learn_rule, mode="fixed", **(learn_options or {}))
        self.model = Loaded.of(B.read_blob(blob), None if self.learner is None else self.learner.sim)
        self.upload_capacity = int(upload_capacity)
        self.max_payload = int(max_payload)
        self.name = name
        self.max_steps = int(max_steps)
        # the device's own limit (default: what one request can carry), lowered per model in Loaded
        self.max_events = (self.max_payload - 6) // 2 if max_events is None else int(max_events)
        self.state_capacity = state_capacity
        self.max_chunk = self.max_payload - 4          # docs/protocol.md: max chunk bytes
        self.parser = P.FrameParser(self.max_payload)
        self.stats = P.Stats()
        self._counts = np.zeros(self.model.sim.n_outputs, np.int64)
        self._staging: bytearray | None = None
        self._expect = (0, 0)            # total bytes, CRC-32 of the upload in progress
        self._received = 0
        self._lock = threading.Lock()    # one transport at a time; feed() is atomic
        self._handlers = {Msg.HELLO: self._hello, Msg.RESET: self._reset, Msg.STATS: self._stats,
                          Msg.ECHO: lambda p: p, Msg.STEP: self._step, Msg.UPLOAD_BEGIN: self._begin,
                          Msg.UPLOAD_CHUNK: self._chunk, Msg.UPLOAD_COMMIT: self._commit,
                          Msg.UPLOAD_ABORT: self._abort, Msg.LEARN: self._learn,
                          Msg.READ_WEIGHTS: self._read_weights, Msg.READ_STATE: self._read_state}

    # ------------------------------------------------------------ transport side
    @property
    def capabilities(self) -> int:
        caps = CAPS | (P.Cap.LEARN if self.learner is not None else 0)
        return int(caps if self.upload_capacity > 0 else caps & ~P.Cap.UPLOAD)

    @property
    def info(self) -> P.Info:
        sim = self.model.sim
        return P.Info(P.VERSION, self.max_payload, self.capabilities, sim.n_inputs, sim.n_outputs,
                      sim.program.n_layers, 0, self.upload_capacity, self._max_events(), self.max_steps,
                      self.model.hash, self.name)

    def _max_events(self) -> int:
        return min(self.max_events, self.model.max_events)

    def feed(self, data: bytes) -> bytes:
        """Bytes from the host in, reply bytes out (every complete request gets exactly one reply)."""
        with self._lock:
            out = []
            for ev in self.parser.feed(data):
                self._count(frames_received=1)
                if isinstance(ev, P.Rejected):
                    self._count(frames_refused=1)
                    out.append(P.frame(Msg.ERROR, ev.seq, P.pack_error(ev.type, ev.reason, ev.detail)))
                else:
                    out.append(self._handle(ev))
            return b"".join(out)

    def disconnected(self):
        """The transport closed: a partial frame is forgotten (an unfinished upload stays staged, as on a
        board, until the next UPLOAD_BEGIN or ABORT; the running model is untouched)."""
        with self._lock:
            self.parser.reset()

    def _handle(self, fr: P.Frame) -> bytes:
        handler = self._handlers.get(fr.type)
        try:
            if handler is None:
                raise Refuse(Err.UNKNOWN, fr.type)
            payload = handler(fr.payload)
            if len(payload) > self.max_payload:   # every handler checks first; this guards the guard
                raise Refuse(Err.REPLY_TOO_BIG, self.max_payload)
            return P.frame(fr.type | P.REPLY, fr.seq, payload)
        except P.Malformed as e:
            self._count(frames_refused=1)
            return P.frame(Msg.ERROR, fr.seq, P.pack_error(fr.type, Err.MALFORMED, e.offset))
        except Refuse as e:
            if e.code == Err.MALFORMED:
                self._count(frames_refused=1)
            return P.frame(Msg.ERROR, fr.seq, P.pack_error(fr.type, e.code, e.detail))

    def _count(self, **inc):
        s = self.stats
        self.stats = P.Stats(**{f: getattr(s, f) + inc.get(f, 0) for f in P.Stats.__dataclass_fields__})

    # ------------------------------------------------------------ simple messages
    @staticmethod
    def _empty(payload):
        if payload:
            raise P.Malformed(0, "this request has no payload")

    def _hello(self, payload):
        self._empty(payload)
        return P.pack_info(self.info)

    def _reset(self, payload):
        self._empty(payload)
        self._reset_state()
        return b""

    def _reset_state(self):
        self.model.sim.reset()
        self._counts = np.zeros(self.model.sim.n_outputs, np.int64)

    def _stats(self, payload):
        clear = P.unpack_stats_request(payload)
        out = P.pack_stats(self.stats)
        if clear:
            self.stats = P.Stats()
        return out

    def _learn(self, payload):
        """docs/protocol.md, LEARN: the format front to back, then the model, then the operation."""
        lr = self.learner
        if lr is None:
            raise Refuse(Err.UNSUPPORTED)
        op, *args = P.unpack_learn(payload)
        n_layers = self.model.sim.program.n_layers
        if op == P.LEARN_MASK:
            (mask,) = args
            for l in range(32):
                if mask >> l & 1 and l not in lr.layers:
                    raise Refuse(Err.ARGUMENT, l)
            lr.mask = {l for l in lr.layers if l >= 32 or mask >> l & 1}
        elif op == P.LEARN_ETA:
            layer, k = args
            if layer >= n_layers or layer not in lr.layers:
                raise Refuse(Err.ARGUMENT, layer)
            lr.eta_shift[layer] = int(k)
        elif op == P.LEARN_ENABLE:
            lr.enabled = bool(args[0])
        elif op == P.LEARN_RESET:
            lr.reset()                  # the network state too (Learner.reset resets its simulator)
            self._counts = np.zeros(self.model.sim.n_outputs, np.int64)
        return P.pack_learn_status(self.learn_status())

    def learn_status(self) -> P.LearnStatus:
        from edgesnn.learning.learner import RULES
        lr = self.learner
        n_layers = self.model.sim.program.n_layers
        mask = sum(1 << l for l in lr.mask if l < 32)
        cfg = tuple(v - 2**32 if v >= 2**31 else v for v in lr.config())   # the i32 words of the reply
        return P.LearnStatus(RULES.index(lr.rule), bool(lr.enabled), mask,
                             tuple(int(lr.eta_shift[l]) if l in lr.layers else P.ETA_NONE for l in range(n_layers)),
                             cfg)

    # ------------------------------------------------------------ STEP
    def _step(self, payload):
        """Check the whole request in the order of docs/protocol.md (STEP), then run every step."""
        sim = self.model.sim
        r = P.Reader(payload)
        flags = r.take("B", "flags")
        if flags & ~(P.STEP_SPIKES | P.STEP_READOUT | P.STEP_CYCLES):
            raise P.Malformed(0, f"flags 0x{flags:02x}: bits 3-7 must be 0")
        n = r.take("H", "n_steps")
        if not 1 <= n <= self.max_steps:
            raise P.Malformed(1, f"n_steps {n} outside 1..{self.max_steps}")
        if P.step_reply_bound(n, sim.n_outputs, flags) > self.max_payload:
            raise Refuse(Err.REPLY_TOO_BIG, self.max_payload)
        steps = []
        for _ in range(n):
            at = r.pos
            teach = r.take("B", "teach")
            if teach & ~(P.TEACH_LABEL | P.TEACH_REWARD):
                raise P.Malformed(at, f"teach 0x{teach:02x}: bits 2-7 must be 0")
            label = reward = None            # teaching signals: ignored without learning
            if teach & P.TEACH_LABEL:
                label = r.take("H", "label")
                if self.learner is not None and label >= sim.n_outputs:
                    raise Refuse(Err.ARGUMENT, label)
            if teach & P.TEACH_REWARD:
                reward = r.take("h", "reward")
            k = r.take("H", "n_events")
            if k > self._max_events():
                raise Refuse(Err.STEP, S.ERR_INPUT_COUNT)
            idx = r.array("<u2", k, "input indices")
            if k and int(idx.max()) >= sim.n_inputs:
                raise Refuse(Err.STEP, S.ERR_INPUT_INDEX)
            steps.append((idx.astype(np.int32), label, reward))
        r.end()
        outs = [self._run_one(idx, flags, label, reward) for idx, label, reward in steps]
        return P.pack_step_reply(flags, outs)

    def _run_one(self, idx: np.ndarray, flags: int, label=None, reward=None) -> P.StepOut:
        m, sim = self.model, self.model.sim
        counts_at = sim._cnt_off           # each layer's spike count of the last step, in the state
        n_layers = sim.program.n_layers
        prev = sim.ist[counts_at:counts_at + n_layers].astype(np.int64)
        if self.learner is not None:     # every step goes through the learner (it learns when enabled)
            spikes = np.sort(self.learner.step(idx, -1 if label is None else label, reward))
        else:
            spikes = np.sort(sim.step(idx))
        now = sim.ist[counts_at:counts_at + n_layers].astype(np.int64)
        # synaptic operations: events into each layer x weights per event, + recurrent feedback
        into = np.concatenate([[idx.size], now[:-1]])
        ops = int((into * m.ops_per_event).sum())
        rec = sim.program.ltab[:, K.L_KIND] == K.RECURRENT
        ops += int((prev[rec] * sim.program.ltab[rec, K.L_N_OUT]).sum())
        self._count(steps=1, input_events=int(idx.size), output_spikes=int(now[m.spiking].sum()),
                    synaptic_ops=ops)
        np.add.at(self._counts, spikes, 1)
        v = sim.v(-1) if not sim.program.ltab[-1, K.L_KIND] == K.FLATTEN else None
        return P.StepOut(self._class(v), 0 if flags & P.STEP_CYCLES else None,
                         spikes.astype(np.uint16) if flags & P.STEP_SPIKES else None,
                         (v.copy() if v is not None else np.zeros(sim.n_outputs, np.int32))
                         if flags & P.STEP_READOUT else None)

    def _class(self, v) -> int:
        if self.model.li_out:
            return int(np.argmax(v))                       # argmax takes the lowest index on ties
        if not self._counts.any():
            return -1
        return int(np.argmax(self._counts))

    # ------------------------------------------------------------ upload
    def _need_upload(self):
        if self.upload_capacity <= 0:
            raise Refuse(Err.UNSUPPORTED)

    def _begin(self, payload):
        self._need_upload()
        total, crc = P.unpack_upload_begin(payload)
        self._staging = None                               # a BEGIN discards any unfinished upload
        if total > self.upload_capacity:
            raise Refuse(Err.TOO_BIG, self.upload_capacity)
        self._staging = bytearray(total)
        self._expect = (total, crc)
        self._received = 0
        return P.pack_upload_begin_reply(self.upload_capacity, self.max_chunk)

    def _chunk(self, payload):
        self._need_upload()
        offset, data = P.unpack_upload_chunk(payload)
        if self._staging is None:
            raise Refuse(Err.NO_UPLOAD)
        if offset != self._received:
            raise Refuse(Err.OFFSET, self._received)
        if len(data) > self._expect[0] - self._received:
            raise P.Malformed(4, f"a chunk of {len(data)} bytes reaches past the announced total")
        self._staging[offset:offset + len(data)] = data
        self._received += len(data)
        return P.pack_u32(self._received)

    def _commit(self, payload):
        self._need_upload()
        self._empty(payload)
        if self._staging is None:
            raise Refuse(Err.NO_UPLOAD)
        total, crc = self._expect
        if self._received != total:
            raise Refuse(Err.INCOMPLETE, self._received)
        blob, self._staging = bytes(self._staging), None    # past this point the staging is spent
        if zlib.crc32(blob) & 0xFFFFFFFF != crc:
            raise Refuse(Err.UPLOAD_CRC)
        try:
            tables = B.read_blob(blob)
        except B.BlobError as e:
            raise Refuse(Err.MODEL, e.status) from None
        need = 4 * tables.state_words + 4 * int(tables.ltab[-1, K.L_N_OUT])   # + the class counts
        if self.state_capacity is not None and need > self.state_capacity:
            raise Refuse(Err.STATE_TOO_BIG, need)
        self.model = Loaded.of(tables)                     # the switch: one assignment
        self.learner = None                                # an uploaded model does not learn
        self._reset_state()
        return P.pack_commit_reply(self.model.hash)

    def _abort(self, payload):
        self._need_upload()
        self._empty(payload)
        self._staging = None
        return b""

    # ------------------------------------------------------------ reads
    def _layer_row(self, layer):
        lt = self.model.sim.program.ltab
        if layer >= lt.shape[0]:
            raise Refuse(Err.ARGUMENT, layer)
        return lt[layer]

    def _range(self, first, count, n, bytes_each, head):
        if first + count > n:
            raise Refuse(Err.ARGUMENT, first)
        if head + count * bytes_each > self.max_payload:
            raise Refuse(Err.REPLY_TOO_BIG, self.max_payload)

    def _read_weights(self, payload):
        """ARGUMENT in the order of docs/protocol.md: layer, which (or a matrix the layer lacks), range."""
        layer, which, first, count = P.unpack_read_weights(payload)
        row = self._layer_row(layer)
        kind, n_in, n_out = row[K.L_KIND], int(row[K.L_N_IN]), int(row[K.L_N_OUT])
        if which == 1 and kind == K.RECURRENT:
            off, n = int(row[K.L_WREC_OFF]), n_out * n_out
        elif which == 0 and kind == K.CONV2D:
            off, n = int(row[K.L_W_OFF]), int(row[K.L_IN_C] * row[K.L_KH] * row[K.L_KW] * row[K.L_OUT_C])
        elif which == 0 and kind in (K.DENSE, K.RECURRENT):
            off, n = int(row[K.L_W_OFF]), n_in * n_out
        else:
            raise Refuse(Err.ARGUMENT, which)
        prog = self.model.sim.program                      # the running pools (a learner writes wb)
        pool = prog.wb if row[K.L_W_POOL] == 1 else prog.wa
        self._range(first, count, n, pool.itemsize, 1)
        return P.pack_weights_reply(pool[off + first:off + first + count])

    def _read_state(self, payload):
        layer, field, first, count = P.unpack_read_state(payload)
        row = self._layer_row(layer)
        off = int(row[(K.L_V_OFF, K.L_I_OFF, K.L_A_OFF)[field]]) if field <= 2 else -1
        if off < 0:
            raise Refuse(Err.ARGUMENT, field)
        self._range(first, count, int(row[K.L_N_OUT]), 4, 0)
        return P.pack_state_reply(self.model.sim.vs[off + first:off + first + count])

    # ------------------------------------------------------------ serving
    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0, log=None) -> "Server":
        """Listen on host:port (0: a free port) and serve connections one after another, in a thread.
        ``server.url`` is socket://HOST:PORT."""
        return TcpServer(self, host, port, log).start()

    def serve_pty(self, log=None) -> "Server":
        """Serve a new pseudo-terminal in raw mode, in a thread; ``server.url`` is the slave's path."""
        return PtyServer(self, log).start()


class Server:
    """A transport serving an EmulatedDevice in a background thread. close() stops it."""

    url: str

    def __init__(self, device: EmulatedDevice, log=None):
        self.device = device
        self.log = log or (lambda msg: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="edgesnn-emulate", daemon=True)

    def start(self) -> "Server":
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None):
        self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _serve(self):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError


class TcpServer(Server):
    def __init__(self, device, host, port, log=None):
        super().__init__(device, log)
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)       # so close() is noticed
        h, p = self._sock.getsockname()[:2]
        self.url = f"socket://{h}:{p}"
        self._conn = None

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self.log(f"connection from {peer[0]}:{peer[1]}")
            self._conn = conn
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # small replies go out at once
            conn.settimeout(0.2)
            try:
                while not self._stop.is_set():
                    try:
                        data = conn.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        break
                    out = self.device.feed(data)
                    if out:
                        conn.sendall(out)
            except OSError as e:
                self.log(f"connection error: {e}")
            except Exception as e:         # a bug must not take the server down: drop this connection
                self.log(f"internal error, connection dropped: {e!r}")
            finally:
                conn.close()
                self._conn = None
                self.device.disconnected()
                self.log(f"{peer[0]}:{peer[1]} disconnected")

    def close(self):
        self._stop.set()
        self._sock.close()
        self._thread.join(2.0)


class PtyServer(Server):
    def __init__(self, device, log=None):
        import tty
        super().__init__(device, log)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)     # no echo, no line editing, no CR/LF translation: bytes as sent
        self.url = os.ttyname(self._slave)   # the slave stays open here, so the path survives reconnects

    def _serve(self):
        import select
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(self._master, 65536)
            except OSError:
                break
            if data:
                try:
                    out = self.device.feed(data)
                except Exception as e:     # a bug must not take the server down
                    self.log(f"internal error, input dropped: {e!r}")
                    self.device.disconnected()
                    continue
                view = memoryview(out)
                while view:
                    view = view[os.write(self._master, view):]

    def close(self):
        self._stop.set()
        self._thread.join(2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
