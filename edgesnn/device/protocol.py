"""The wire protocol, version 1 (docs/protocol.md): frames, the incremental parser, message payloads.

Pure functions and one small state machine (FrameParser); no I/O. The C side
(firmware_gen/runtime/esnn_link.c) implements the same bytes; its tests import this module.

    data = frame(MSG_HELLO, seq=7)                    # bytes on the wire
    p = FrameParser(max_payload=4096)
    for ev in p.feed(data): ...                       # Frame or Rejected events, in stream order
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np

SYNC = b"\xA5\x5A"
VERSION = 1
HEADER_BYTES = 10
TRAILER_BYTES = 4
OVERHEAD = HEADER_BYTES + TRAILER_BYTES
MAX_PAYLOAD_LIMIT = 65535
REPLY = 0x80
_HEAD = struct.Struct("<2sBBHHH")          # sync, version, type, seq, length, header check


class Msg(IntEnum):
    HELLO = 0x01
    RESET = 0x02
    STATS = 0x03
    ECHO = 0x04
    STEP = 0x10
    UPLOAD_BEGIN = 0x20
    UPLOAD_CHUNK = 0x21
    UPLOAD_COMMIT = 0x22
    UPLOAD_ABORT = 0x23
    LEARN = 0x30
    READ_WEIGHTS = 0x31
    READ_STATE = 0x32
    ERROR = 0xFF


class Err(IntEnum):
    CRC = 1
    VERSION = 2
    TOO_LONG = 3
    UNKNOWN = 4
    MALFORMED = 5
    STEP = 6
    REPLY_TOO_BIG = 7
    NO_UPLOAD = 8
    OFFSET = 9
    TOO_BIG = 10
    INCOMPLETE = 11
    UPLOAD_CRC = 12
    MODEL = 13
    STATE_TOO_BIG = 14
    UNSUPPORTED = 15
    ARGUMENT = 16


class Cap(IntFlag):
    UPLOAD = 1 << 0
    CYCLES = 1 << 1
    READ_WEIGHTS = 1 << 2
    READ_STATE = 1 << 3
    LEARN = 1 << 4
    READOUT = 1 << 5


# flat names (MSG_HELLO, ERR_CRC, CAP_UPLOAD) for code that prefers constants to enums
for _e, _prefix in ((Msg, "MSG_"), (Err, "ERR_"), (Cap, "CAP_")):
    for _m in _e:
        globals()[_prefix + _m.name] = _m
del _e, _prefix, _m

STEP_SPIKES, STEP_READOUT, STEP_CYCLES = 1, 2, 4        # STEP flags
TEACH_LABEL, TEACH_REWARD = 1, 2                        # per-step teach bits
WHICH_FF, WHICH_REC = 0, 1                              # READ_WEIGHTS which
FIELD_V, FIELD_I, FIELD_A = 0, 1, 2                     # READ_STATE field
HASH_BYTES = 32


def msg_name(t: int) -> str:
    """'HELLO', 'HELLO reply', 'ERROR' or '0x5e' for any type byte."""
    t = int(t)
    if t == Msg.ERROR:
        return "ERROR"
    base = t & 0x7F
    try:
        name = Msg(base).name
    except ValueError:
        return f"0x{t:02x}"
    return name + (" reply" if t & REPLY else "")


def err_name(code: int) -> str:
    try:
        return Err(int(code)).name
    except ValueError:
        return f"code {int(code)}"


# ---------------------------------------------------------------------------------------- checks
def _crc16_table():
    tab = []
    for b in range(256):
        c = b << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        tab.append(c & 0xFFFF)
    return tuple(tab)


_CRC16 = _crc16_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor); '123456789' -> 0x29B1."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------- frames
def header(type_: int, seq: int, length: int, version: int = VERSION) -> bytes:
    """The 10 header bytes (sync .. header check) of a frame."""
    fields = struct.pack("<BBHH", version, type_, seq & 0xFFFF, length)
    return SYNC + fields + struct.pack("<H", crc16(fields))


def frame(type_: int, seq: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    """One complete frame. ``version`` other than 1 only for tests of the VERSION refusal."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_LIMIT:
        raise ValueError(f"a payload of {len(payload)} bytes does not fit a frame (at most 65535)")
    head = header(type_, seq, len(payload), version)
    # the frame check covers bytes 2 .. 10+N-1: the header fields, the header check and the payload
    return head + payload + struct.pack("<I", crc32(head[2:] + payload))


@dataclass(frozen=True)
class Frame:
    """A frame whose header and frame checks held."""

    type: int
    seq: int
    payload: bytes
    version: int = VERSION


@dataclass(frozen=True)
class Rejected:
    """A frame with a valid header that is not acted on. ``reason`` is Err.CRC, Err.VERSION or
    Err.TOO_LONG; ``detail`` is what the ERROR reply carries (0, the version, max_payload)."""

    type: int
    seq: int
    reason: Err
    detail: int
    length: int
    version: int = VERSION


class FrameParser:
    """Incremental receiver: feed bytes (any chunking, one byte at a time included) and get events.

    Behaves exactly as a byte-at-a-time state machine: scan for A5 5A; a bad header check discards
    the first sync byte only; a trusted header of another version or longer than max_payload has its
    payload and trailer skipped (not scanned) and is reported once skipped; a bad frame check is
    reported after the whole frame arrived. ``garbage`` counts bytes discarded while scanning."""

    def __init__(self, max_payload: int = MAX_PAYLOAD_LIMIT):
        self.max_payload = int(max_payload)
        self._buf = bytearray()
        self._skip = 0                 # bytes still to discard of a refused frame
        self._pending: Rejected | None = None
        self.garbage = 0
        self.bad_headers = 0

    def reset(self):
        """Forget partial input (a new connection)."""
        self._buf.clear()
        self._skip = 0
        self._pending = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not complete yet (plus bytes still to skip)."""
        return len(self._buf) + self._skip

    def feed(self, data) -> list:
        out = []
        data = memoryview(bytes(data))
        while True:
            if self._skip:
                n = min(self._skip, len(data))
                self._skip -= n
                data = data[n:]
                if self._skip:
                    return out
                out.append(self._pending)
                self._pending = None
            if data:
                self._buf += data
                data = data[:0]
            ev = self._next()
            if ev is None:
                return out
            if ev is not _SKIPPING:
                out.append(ev)

    def _next(self):
        """One event from the buffer, _SKIPPING when a skip started, None when more bytes are needed."""
        buf = self._buf
        while True:
            i = buf.find(SYNC)
            if i < 0:
                keep = 1 if buf[-1:] == SYNC[:1] else 0      # a lone A5 may be the start of a sync
                self.garbage += len(buf) - keep
                del buf[:len(buf) - keep]
                return None
            if i:
                self.garbage += i
                del buf[:i]
            if len(buf) < HEADER_BYTES:
                return None
            _, version, type_, seq, length, check = _HEAD.unpack_from(buf, 0)
            if crc16(bytes(buf[2:8])) != check:
                self.bad_headers += 1
                self.garbage += 1
                del buf[:1]                                   # the first sync byte only
                continue
            if version != VERSION or length > self.max_payload:
                reason, detail = (Err.VERSION, version) if version != VERSION else (Err.TOO_LONG, self.max_payload)
                rej = Rejected(type_, seq, reason, detail, length, version)
                rest = length + TRAILER_BYTES
                have = len(buf) - HEADER_BYTES
                if have >= rest:
                    del buf[:HEADER_BYTES + rest]
                    return rej
                # skip what remains without buffering it; bytes after the skip are fed again by feed()
                self._skip = rest - have
                self._pending = rej
                buf.clear()
                return _SKIPPING
            total = HEADER_BYTES + length + TRAILER_BYTES
            if len(buf) < total:
                return None
            body = bytes(buf[2:HEADER_BYTES + length])
            (fcs,) = struct.unpack_from("<I", buf, HEADER_BYTES + length)
            payload = body[8:]
            del buf[:total]
            if crc32(body) != fcs:
                return Rejected(type_, seq, Err.CRC, 0, length, version)
            return Frame(type_, seq, payload, version)


_SKIPPING = object()


def parse_all(data: bytes, max_payload: int = MAX_PAYLOAD_LIMIT) -> list:
    """Every event in some bytes (a convenience for tests)."""
    return FrameParser(max_payload).feed(data)


# ---------------------------------------------------------------------------------------- payloads
class Malformed(ValueError):
    """A payload of the wrong length or contents for its type; ``offset`` is the byte offset in the
    payload where reading failed (the ERROR MALFORMED detail)."""

    def __init__(self, offset: int, what: str):
        super().__init__(f"malformed payload at byte {offset}: {what}")
        self.offset = int(offset)


class Reader:
    """Sequential little-endian reads that raise Malformed at the offset of the missing field."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.pos = 0

    def take(self, fmt: str, what: str):
        s = struct.Struct("<" + fmt)
        if self.pos + s.size > len(self.data):
            raise Malformed(self.pos, f"{what} missing (payload ends at {len(self.data)})")
        v = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return v if len(v) > 1 else v[0]

    def raw(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise Malformed(self.pos, f"{what}: {n} bytes needed, {len(self.data) - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def array(self, dtype: str, n: int, what: str) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.raw(n * dt.itemsize, what), dt).copy()

    def end(self):
        if self.pos != len(self.data):
            raise Malformed(self.pos, f"{len(self.data) - self.pos} bytes after the end of the message")


def _fixed(fmt: str, payload: bytes, what: str):
    """Fields read one by one, so a missing one is reported at its own first byte (docs/protocol.md)."""
    r = Reader(payload)
    v = tuple(r.take(f, what) for f in re.findall(r"\d*[a-zA-Z]", fmt))
    r.end()
    return v if len(v) > 1 else v[0]


# ---- HELLO
@dataclass(frozen=True)
class Info:
    """The HELLO reply."""

    version: int
    max_payload: int
    capabilities: int
    n_inputs: int
    n_outputs: int
    n_layers: int
    clock_hz: int
    upload_capacity: int
    max_events: int
    max_steps: int
    model_hash: bytes
    name: str

    def has(self, cap: Cap) -> bool:
        return bool(self.capabilities & cap)

    @property
    def hash_hex(self) -> str:
        return self.model_hash.hex()


_INFO = struct.Struct("<HHIIIIIIII32s")


def pack_info(info: Info) -> bytes:
    name = info.name.encode("utf-8")
    if len(name) > 255:
        raise ValueError("a device name is at most 255 bytes of UTF-8")
    return _INFO.pack(info.version, info.max_payload, info.capabilities, info.n_inputs, info.n_outputs,
                      info.n_layers, info.clock_hz, info.upload_capacity, info.max_events, info.max_steps,
                      bytes(info.model_hash)) + bytes([len(name)]) + name


def unpack_info(payload: bytes) -> Info:
    r = Reader(payload)
    fields = r.take(_INFO.format[1:], "the HELLO info")
    n = r.take("B", "the name length")
    name = r.raw(n, "the name").decode("utf-8", "replace")
    r.end()
    return Info(*fields, name)


# ---- STATS
@dataclass(frozen=True)
class Stats:
    steps: int = 0
    input_events: int = 0
    output_spikes: int = 0
    synaptic_ops: int = 0
    cycles: int = 0
    last_cycles: int = 0
    frames_received: int = 0
    frames_refused: int = 0
    bytes_dropped: int = 0


_STATS = struct.Struct("<QQQQQIIII")


def pack_stats_request(clear: bool = False) -> bytes:
    return bytes([1 if clear else 0])


def unpack_stats_request(payload: bytes) -> bool:
    clear = _fixed("B", payload, "the clear flag")
    if clear > 1:
        raise Malformed(0, f"clear is {clear}, not 0 or 1")
    return bool(clear)


def pack_stats(s: Stats) -> bytes:
    return _STATS.pack(*(int(getattr(s, f)) & ((1 << (8 * _sz)) - 1)
                         for f, _sz in zip(Stats.__dataclass_fields__, (8, 8, 8, 8, 8, 4, 4, 4, 4))))


def unpack_stats(payload: bytes) -> Stats:
    return Stats(*_fixed(_STATS.format[1:], payload, "the stats"))


# ---- STEP
@dataclass(frozen=True)
class StepIn:
    """One step of a STEP request."""

    indices: tuple | list | np.ndarray = ()
    label: int | None = None
    reward: int | None = None


@dataclass(eq=False)
class StepOut:
    """One step of a STEP reply; absent parts (not requested) are None."""

    cls: int
    cycles: int | None = None
    spikes: np.ndarray | None = None     # uint16 ascending indices of the last layer's spikes
    v: np.ndarray | None = None          # int32 [n_outputs]


def step_reply_bound(n_steps: int, n_outputs: int, flags: int) -> int:
    """The worst-case STEP reply payload (docs/protocol.md): every output spiking at every step."""
    per = 2 + (4 if flags & STEP_CYCLES else 0) + ((2 + 2 * n_outputs) if flags & STEP_SPIKES else 0) \
        + (4 * n_outputs if flags & STEP_READOUT else 0)
    return 3 + n_steps * per


def step_request_size(steps) -> int:
    """Payload bytes of a STEP request holding these StepIn records."""
    return 3 + sum(3 + 2 * len(s.indices) + (2 if s.label is not None else 0)
                   + (2 if s.reward is not None else 0) for s in steps)


def pack_step_request(flags: int, steps) -> bytes:
    out = [struct.pack("<BH", flags, len(steps))]
    for s in steps:
        teach = (TEACH_LABEL if s.label is not None else 0) | (TEACH_REWARD if s.reward is not None else 0)
        out.append(bytes([teach]))
        if s.label is not None:
            out.append(struct.pack("<H", s.label))
        if s.reward is not None:
            out.append(struct.pack("<h", s.reward))
        idx = np.asarray(s.indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() > 0xFFFF):
            raise ValueError("input indices travel as u16: every index must be in 0..65535")
        out.append(struct.pack("<H", idx.size) + idx.astype("<u2").tobytes())
    return b"".join(out)


def unpack_step_request(payload: bytes) -> tuple[int, list]:
    """(flags, [StepIn]); indices are uint16 arrays. Raises Malformed for any structural defect
    (the ranges of n_steps, n_events and indices are the device's checks, not the format's)."""
    r = Reader(payload)
    flags = r.take("B", "flags")
    if flags & ~(STEP_SPIKES | STEP_READOUT | STEP_CYCLES):
        raise Malformed(0, f"flags 0x{flags:02x}: bits 3-7 must be 0")
    n = r.take("H", "n_steps")
    steps = []
    for _ in range(n):
        at = r.pos
        teach = r.take("B", "teach")
        if teach & ~(TEACH_LABEL | TEACH_REWARD):
            raise Malformed(at, f"teach 0x{teach:02x}: bits 2-7 must be 0")
        label = r.take("H", "label") if teach & TEACH_LABEL else None
        reward = r.take("h", "reward") if teach & TEACH_REWARD else None
        k = r.take("H", "n_events")
        steps.append(StepIn(r.array("<u2", k, "input indices"), label, reward))
    r.end()
    return flags, steps


def pack_step_reply(flags: int, outs) -> bytes:
    parts = [struct.pack("<BH", flags, len(outs))]
    for o in outs:
        parts.append(struct.pack("<h", o.cls))
        if flags & STEP_CYCLES:
            parts.append(struct.pack("<I", o.cycles or 0))
        if flags & STEP_SPIKES:
            s = np.asarray(o.spikes, dtype="<u2").reshape(-1)
            parts.append(struct.pack("<H", s.size) + s.tobytes())
        if flags & STEP_READOUT:
            parts.append(np.asarray(o.v, dtype="<i4").tobytes())
    return b"".join(parts)


def unpack_step_reply(payload: bytes, n_outputs: int) -> tuple[int, list]:
    """(flags, [StepOut]); ``n_outputs`` (from HELLO) sizes the readout values."""
    r = Reader(payload)
    flags = r.take("B", "flags")
    n = r.take("H", "n_steps")
    outs = []
    for _ in range(n):
        o = StepOut(r.take("h", "class"))
        if flags & STEP_CYCLES:
            o.cycles = r.take("I", "cycles")
        if flags & STEP_SPIKES:
            o.spikes = r.array("<u2", r.take("H", "n spikes"), "spike indices").astype(np.uint16)
        if flags & STEP_READOUT:
            o.v = r.array("<i4", n_outputs, "readout values").astype(np.int32)
        outs.append(o)
    r.end()
    return flags, outs


# ---- upload
def pack_upload_begin(total: int, crc: int) -> bytes:
    return struct.pack("<II", total, crc)


def unpack_upload_begin(payload: bytes) -> tuple[int, int]:
    return _fixed("II", payload, "total bytes and CRC-32")


def pack_upload_begin_reply(capacity: int, max_chunk: int) -> bytes:
    return struct.pack("<IH", capacity, max_chunk)


def unpack_upload_begin_reply(payload: bytes) -> tuple[int, int]:
    return _fixed("IH", payload, "capacity and max chunk bytes")


def pack_upload_chunk(offset: int, data: bytes) -> bytes:
    return struct.pack("<I", offset) + bytes(data)


def unpack_upload_chunk(payload: bytes) -> tuple[int, bytes]:
    r = Reader(payload)
    off = r.take("I", "offset")
    return off, r.data[r.pos:]


def pack_u32(n: int) -> bytes:
    """UPLOAD_CHUNK reply: bytes received so far."""
    return struct.pack("<I", n)


def unpack_u32(payload: bytes) -> int:
    return _fixed("I", payload, "a u32")


pack_upload_chunk_reply, unpack_upload_chunk_reply = pack_u32, unpack_u32


def unpack_commit_reply(payload: bytes) -> bytes:
    if len(payload) != HASH_BYTES:
        raise Malformed(min(len(payload), HASH_BYTES), "an UPLOAD_COMMIT reply is the 32-byte model hash")
    return bytes(payload)


def pack_commit_reply(digest: bytes) -> bytes:
    return bytes(unpack_commit_reply(digest))


# ---- READ_WEIGHTS / READ_STATE
_READ = struct.Struct("<HBIH")


def pack_read_weights(layer: int, which: int, first: int, count: int) -> bytes:
    return _READ.pack(layer, which, first, count)


def unpack_read_weights(payload: bytes) -> tuple[int, int, int, int]:
    return _fixed(_READ.format[1:], payload, "layer, which, first, count")


def pack_weights_reply(weights) -> bytes:
    w = np.asarray(weights)
    bpw = 1 if w.dtype == np.int8 else 2
    return bytes([bpw]) + w.astype("i1" if bpw == 1 else "<i2").tobytes()


def unpack_weights_reply(payload: bytes) -> np.ndarray:
    r = Reader(payload)
    bpw = r.take("B", "bytes per weight")
    if bpw not in (1, 2):
        raise Malformed(0, f"bytes per weight is {bpw}, not 1 or 2")
    rest = len(r.data) - r.pos
    if rest % bpw:
        raise Malformed(len(r.data) - rest % bpw, "a partial weight at the end")
    return r.array("i1" if bpw == 1 else "<i2", rest // bpw, "weights").astype(np.int8 if bpw == 1 else np.int16)


def pack_read_state(layer: int, field_: int, first: int, count: int) -> bytes:
    return _READ.pack(layer, field_, first, count)


unpack_read_state = unpack_read_weights


def pack_state_reply(values) -> bytes:
    return np.asarray(values, dtype="<i4").tobytes()


def unpack_state_reply(payload: bytes) -> np.ndarray:
    if len(payload) % 4:
        raise Malformed(len(payload) - len(payload) % 4, "a READ_STATE reply is a whole number of i32")
    return np.frombuffer(bytes(payload), "<i4").astype(np.int32)


# ---- LEARN
LEARN_QUERY, LEARN_ENABLE, LEARN_MASK, LEARN_ETA, LEARN_RESET = 0, 1, 2, 3, 4     # LEARN operations
ETA_NONE = 0xFF                                                                  # a layer that does not learn
LEARN_CONFIG_WORDS = 17                                                          # esnn_learn_config_t


@dataclass(frozen=True)
class LearnStatus:
    """The LEARN reply: the rule (edgesnn.learning.RULES index), learning on/off, the layer mask (bit l:
    layer l learns), per layer its eta shift (ETA_NONE: the layer does not learn), and the learner's
    configuration (esnn_learn_config_t, LEARN_CONFIG_WORDS int32 in Learner.CONFIG_FIELDS order:
    Learner.for_config(model, config) rebuilds the device's learner on the host)."""

    rule: int
    enabled: bool
    mask: int
    eta: tuple
    config: tuple = ()

    @property
    def rule_name(self) -> str:
        from edgesnn.learning.learner import RULES
        return RULES[self.rule] if 0 <= self.rule < len(RULES) else f"rule {self.rule}"

    @property
    def layers(self) -> list:
        """The layers that can learn (eta shift given)."""
        return [l for l, k in enumerate(self.eta) if k != ETA_NONE]


def pack_learn(op: int, *args) -> bytes:
    """A LEARN request: QUERY / RESET (), ENABLE (on), MASK (u32 mask), ETA (u16 layer, u8 shift)."""
    fmt = {LEARN_QUERY: "", LEARN_ENABLE: "B", LEARN_MASK: "I", LEARN_ETA: "HB", LEARN_RESET: ""}[op]
    return struct.pack("<B" + fmt, op, *args)


def unpack_learn(payload: bytes) -> tuple:
    """(op, args...) of a LEARN request, checked front to back (docs/protocol.md, LEARN)."""
    r = Reader(payload)
    op = r.take("B", "op")
    if op > LEARN_RESET:
        raise Malformed(0, f"LEARN operation {op}: 0..4")
    args = ()
    if op == LEARN_ENABLE:
        on = r.take("B", "on")
        if on > 1:
            raise Malformed(1, f"on is {on}, not 0 or 1")
        args = (on,)
    elif op == LEARN_MASK:
        args = (r.take("I", "mask"),)
    elif op == LEARN_ETA:
        layer = r.take("H", "layer")
        k = r.take("B", "eta shift")
        if k > 31:
            raise Malformed(3, f"eta shift {k}: 0..31")
        args = (layer, k)
    r.end()
    return (op,) + args


def pack_learn_status(st: LearnStatus) -> bytes:
    if len(st.config) != LEARN_CONFIG_WORDS:
        raise ValueError(f"a learning status carries {LEARN_CONFIG_WORDS} config words, got {len(st.config)}")
    cfg = [int(v) & 0xFFFFFFFF for v in st.config]
    return (struct.pack("<BBIH", st.rule, 1 if st.enabled else 0, st.mask & 0xFFFFFFFF, len(st.eta))
            + bytes(st.eta) + struct.pack(f"<{LEARN_CONFIG_WORDS}I", *cfg))


def unpack_learn_status(payload: bytes) -> LearnStatus:
    r = Reader(payload)
    rule, enabled, mask, n = r.take("BBIH", "the learning status")
    eta = tuple(r.raw(n, "the eta shifts"))
    cfg = r.take(f"{LEARN_CONFIG_WORDS}i", "the learner's configuration")
    r.end()
    return LearnStatus(rule, bool(enabled), mask, eta, tuple(cfg))


# ---- ERROR
@dataclass(frozen=True)
class ErrorReply:
    request: int
    code: int
    detail: int

    @property
    def code_name(self) -> str:
        return err_name(self.code)


_ERROR = struct.Struct("<BBHi")


def pack_error(request: int, code: int, detail: int = 0) -> bytes:
    # detail is an i32 on the wire; offsets, capacities and sizes above 2^31 wrap (none occur in practice)
    d = int(detail) & 0xFFFFFFFF
    return _ERROR.pack(request & 0xFF, 0, int(code), d - (1 << 32) if d >= 1 << 31 else d)


def unpack_error(payload: bytes) -> ErrorReply:
    req, _zero, code, detail = _fixed(_ERROR.format[1:], payload, "the ERROR payload")
    return ErrorReply(req, code, detail)


__all__ = [n for n, v in dict(globals()).items()
           if not n.startswith("_") and not isinstance(v, type(re)) and n not in ("annotations", "dataclass",
                                                                                   "IntEnum", "IntFlag")]
