"""The weight blob: a FixedModel's flat program as one little-endian, checksummed binary that the C
runtime uses in place (esnn_model_from_blob points its model into it; nothing is copied).

    0    8   magic b"ESNNBLOB"
    8    u16 format version (1)          10  u16 header bytes (96)
    12   u32 total bytes (the whole blob, CRC included)
    16   u32 layers L                    20  u32 fields per layer row (25)     24  u32 fields per parameter row (6)
    28   u32 int8 weights n_wa           32  u32 int16 weights n_wb
    36   u32 state words n_vs            40  u32 state words n_ist             44  u32 flags (0)
    48   32  model hash (SHA-256, edgesnn.model.modelfile.model_hash)
    80   16  reserved (0)
    96   i32 ltab[L][25]    then, each at the next multiple of 16 (zero padding):
         i32 ptab[L][6],  i8 wa[n_wa],  i16 wb[n_wb];   zero padding to a multiple of 4
    end  u32 CRC32 (zlib) of every byte before it

docs/c_runtime.md states the format and what the loader checks.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from edgesnn.errors import ModelError
from edgesnn.kernels import layout as K
from edgesnn.model.program import Program, build_fixed

MAGIC = b"ESNNBLOB"
VERSION = 1
HEADER_BYTES = 96
ALIGN = 16
HASH_BYTES = 32
HEADER = struct.Struct("<8sHHIIIIIIIII32s16s")
assert HEADER.size == HEADER_BYTES
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


@dataclass(eq=False)
class Tables:
    """What the runtime's esnn_model_t holds, as numpy arrays of the C types."""

    ltab: np.ndarray   # int32 [L, 25]
    ptab: np.ndarray   # int32 [L, 6]
    wa: np.ndarray     # int8
    wb: np.ndarray     # int16
    n_vs: int
    n_ist: int
    hash: bytes        # 32 bytes

    @property
    def n_layers(self) -> int:
        return int(self.ltab.shape[0])

    @property
    def width(self) -> int:
        """The widest layer: the size of the runtime's accumulators."""
        return max(1, int(self.ltab[:, K.L_N_OUT].max()))

    @property
    def state_words(self) -> int:
        """esnn_state_bytes / 4: vs, ist, then width uint32 accumulators and width int16 partial sums."""
        return self.n_vs + self.n_ist + self.width + (self.width + 1) // 2


def _int32(a, what) -> np.ndarray:
    a = np.asarray(a, np.int64)
    if a.size and (a.min() < I32_MIN or a.max() > I32_MAX):
        raise ModelError(f"the {what} holds a value outside int32, which the C runtime's tables use; "
                         f"this model cannot run on the device")
    return a.astype(np.int32)


def model_hash_bytes(model) -> bytes:
    """The 32-byte SHA-256 identifying the model (the model file's hash, also used by the device protocol)."""
    from edgesnn.model.modelfile import model_hash
    return bytes.fromhex(model_hash(model))


def tables(model, program: Program | None = None) -> Tables:
    """The C runtime's tables of a FixedModel (its program from build_fixed unless given)."""
    p = build_fixed(model) if program is None else program
    if not p.fixed:
        raise ModelError("the C runtime runs fixed-point programs only (build_fixed)")
    if p.wa.size > 2**32 - 1 or p.wb.size > 2**32 - 1:
        raise ModelError("a weight pool holds more than 2^32 - 1 weights; the blob counts them in 32 bits")
    return Tables(_int32(p.ltab, "layer table"), _int32(p.ptab, "parameter table"),
                  np.ascontiguousarray(p.wa, np.int8), np.ascontiguousarray(p.wb, np.int16),
                  int(p.n_vs), int(p.n_ist), model_hash_bytes(model))


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def layout(n_layers: int, n_wa: int, n_wb: int) -> dict:
    """Byte offsets of the sections and the total length."""
    ltab = HEADER_BYTES
    ptab = _align(ltab + 4 * n_layers * K.NL, ALIGN)
    wa = _align(ptab + 4 * n_layers * K.NP, ALIGN)
    wb = _align(wa + n_wa, ALIGN)
    crc = _align(wb + 2 * n_wb, 4)
    return {"ltab": ltab, "ptab": ptab, "wa": wa, "wb": wb, "crc": crc, "total": crc + 4}


def pack_tables(t: Tables, *, version: int = VERSION, flags: int = 0) -> bytes:
    """The blob of some tables, as they are (tests use this to write inconsistent ones with a valid CRC)."""
    ltab = np.ascontiguousarray(t.ltab, "<i4")
    ptab = np.ascontiguousarray(t.ptab, "<i4")
    n_layers = ltab.shape[0]
    if ltab.shape != (n_layers, K.NL) or ptab.shape != (n_layers, K.NP) or len(t.hash) != HASH_BYTES:
        raise ModelError(f"tables of the wrong shape: ltab {ltab.shape}, ptab {ptab.shape}, hash {len(t.hash)}")
    at = layout(n_layers, t.wa.size, t.wb.size)
    out = bytearray(at["total"])
    HEADER.pack_into(out, 0, MAGIC, version, HEADER_BYTES, at["total"], n_layers, K.NL, K.NP, t.wa.size,
                     t.wb.size, t.n_vs, t.n_ist, flags, bytes(t.hash), bytes(16))
    for name, arr in (("ltab", ltab), ("ptab", ptab), ("wa", np.ascontiguousarray(t.wa, "i1")),
                      ("wb", np.ascontiguousarray(t.wb, "<i2"))):
        raw = arr.tobytes()
        out[at[name]:at[name] + len(raw)] = raw
    return with_crc(bytes(out))


def pack(model, program: Program | None = None) -> bytes:
    """The weight blob of a FixedModel."""
    return pack_tables(tables(model, program))


def with_crc(data: bytes) -> bytes:
    """The same bytes with the CRC32 trailer recomputed."""
    body = bytes(data[:-4])
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def unpack(data: bytes) -> Tables:
    """Read the tables back (layout only: the C loader is the one that checks a blob completely)."""
    (magic, version, hbytes, total, n_layers, nl, np_, n_wa, n_wb, n_vs, n_ist, flags, digest,
     _reserved) = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION or hbytes != HEADER_BYTES or total != len(data) \
            or (nl, np_) != (K.NL, K.NP):
        raise ModelError("not a version-1 weight blob, or truncated")
    at = layout(n_layers, n_wa, n_wb)

    def arr(name, dtype, count, shape=None):
        a = np.frombuffer(data, dtype, count, at[name]).copy()
        return a.reshape(shape) if shape else a

    return Tables(arr("ltab", "<i4", n_layers * K.NL, (n_layers, K.NL)).astype(np.int32),
                  arr("ptab", "<i4", n_layers * K.NP, (n_layers, K.NP)).astype(np.int32),
                  arr("wa", "i1", n_wa).astype(np.int8), arr("wb", "<i2", n_wb).astype(np.int16),
                  n_vs, n_ist, digest)


def modified(t: Tables, **changes) -> Tables:
    """A copy of the tables with fields replaced (arrays copied, so the original stays as it was)."""
    base = replace(t, ltab=t.ltab.copy(), ptab=t.ptab.copy(), wa=t.wa.copy(), wb=t.wb.copy())
    return replace(base, **changes)


# ------------------------------------------------------------------ reading a blob as the runtime does
MAX_LAYERS = 256            # ESNN_MAX_LAYERS
_MAX_DIM = 65535            # MAX_DIM of edgesnn.c
_Q24_ONE = 1 << 24


class BlobError(ModelError):
    """A blob esnn_model_from_blob refuses; ``status`` is its ESNN_ERR_ code (firmware_gen/status.py)."""

    def __init__(self, status: int, what: str):
        from . import status as S
        super().__init__(f"weight blob refused ({S.name(status)}): {what}; rebuild it with "
                         f"firmware_gen.blob.pack(model) from a valid model")
        self.status = int(status)


def read_blob(data: bytes) -> Tables:
    """The tables of a blob, checked exactly as the C runtime's esnn_model_from_blob checks them (same
    checks, same order, same status), so the emulated device refuses what a board refuses. Raises
    BlobError carrying the status."""
    from . import status as S
    data = bytes(data)
    n = len(data)
    if n < 16:
        raise BlobError(S.ERR_BLOB_SIZE, f"{n} bytes, shorter than any blob")
    if data[:8] != MAGIC:
        raise BlobError(S.ERR_BLOB_MAGIC, "it does not start with ESNNBLOB")
    (version,) = struct.unpack_from("<H", data, 8)
    if version != VERSION:
        raise BlobError(S.ERR_BLOB_VERSION, f"format version {version}, this runtime reads {VERSION}")
    (total,) = struct.unpack_from("<I", data, 12)
    if total != n:
        raise BlobError(S.ERR_BLOB_SIZE, f"its header says {total} bytes, it has {n}")
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != struct.unpack_from("<I", data, n - 4)[0]:
        raise BlobError(S.ERR_BLOB_CRC, "CRC32 mismatch (damaged)")

    def fmt(what):
        return BlobError(S.ERR_BLOB_FORMAT, what)

    if n < HEADER_BYTES + 4:
        raise fmt("shorter than its header")
    (_m, _v, hbytes, _t, n_layers, nl, np_, n_wa, n_wb, n_vs, n_ist, flags, digest,
     reserved) = HEADER.unpack_from(data, 0)
    if hbytes != HEADER_BYTES or nl != K.NL or np_ != K.NP or flags != 0 or any(reserved):
        raise fmt("header fields (header bytes, row widths, flags, reserved) are not the version-1 ones")
    if not 1 <= n_layers <= MAX_LAYERS:
        raise fmt(f"{n_layers} layers (1..{MAX_LAYERS})")
    at = layout(n_layers, n_wa, n_wb)
    if at["total"] != n:
        raise fmt(f"the section sizes add up to {at['total']} bytes, the blob has {n}")
    end = at["wb"] + 2 * n_wb
    pads = ((at["ltab"] + 4 * n_layers * K.NL, at["ptab"]), (at["ptab"] + 4 * n_layers * K.NP, at["wa"]),
            (at["wa"] + n_wa, at["wb"]), (end, at["crc"]))
    if any(any(data[a:b]) for a, b in pads):
        raise fmt("non-zero padding between sections")
    t = unpack(data)
    status = check_tables(t)
    if status != S.OK:
        raise BlobError(status, "the tables are inconsistent (kinds, sizes, offsets, constants)")
    return t


def _fits(off, length, size) -> bool:
    return off >= 0 and off + length <= size


def _layer_ok(t: Tables, l: int, width: int) -> bool:
    """layer_ok of edgesnn.c, field for field."""
    from edgesnn.kernels.arith import FORM_MULTIPLY, FORM_SHIFT
    row = [int(x) for x in t.ltab[l]]
    prm = [int(x) for x in t.ptab[l]]
    kind, neuron, n_in, n_out = row[K.L_KIND], row[K.L_NEURON], row[K.L_N_IN], row[K.L_N_OUT]
    lists = t.n_ist - t.n_layers
    pool = t.wa.size if row[K.L_W_POOL] == 0 else t.wb.size
    if kind < K.DENSE or kind > K.RECURRENT or n_in < 1 or n_out < 1 or n_out > width:
        return False
    if l > 0 and n_in != int(t.ltab[l - 1, K.L_N_OUT]):
        return False
    if kind in (K.CONV2D, K.SUMPOOL2D) and (
            min(row[K.L_IN_C], row[K.L_IN_H], row[K.L_IN_W], row[K.L_OUT_C], row[K.L_OUT_H], row[K.L_OUT_W]) < 1
            or row[K.L_IN_C] * row[K.L_IN_H] * row[K.L_IN_W] != n_in
            or row[K.L_OUT_C] * row[K.L_OUT_H] * row[K.L_OUT_W] != n_out):
        return False
    if not _fits(row[K.L_S_OFF], n_out, lists):
        return False
    if kind == K.FLATTEN:
        return (neuron == K.NONE and n_in == n_out and row[K.L_V_OFF] == -1 and row[K.L_I_OFF] == -1
                and row[K.L_A_OFF] == -1 and row[K.L_R_OFF] == -1)
    if neuron < K.LIF or neuron > K.LI or row[K.L_REF_STEPS] < 0 \
            or row[K.L_RESET] not in (K.RESET_SUBTRACT, K.RESET_ZERO) \
            or row[K.L_DECAY_FORM] not in (FORM_MULTIPLY, FORM_SHIFT):
        return False
    spiking = neuron != K.LI
    if any(not 0 <= prm[p] <= _Q24_ONE for p in (K.P_DV, K.P_DI, K.P_DA)) or (spiking and prm[K.P_THETA] < 1):
        return False
    if not _fits(row[K.L_V_OFF], n_out, t.n_vs):
        return False
    if (neuron == K.CUBA) != (row[K.L_I_OFF] >= 0) or (neuron == K.ALIF) != (row[K.L_A_OFF] >= 0) \
            or (spiking and row[K.L_REF_STEPS] > 0) != (row[K.L_R_OFF] >= 0):
        return False
    if (row[K.L_I_OFF] >= 0 and not _fits(row[K.L_I_OFF], n_out, t.n_vs)) \
            or (row[K.L_A_OFF] >= 0 and not _fits(row[K.L_A_OFF], n_out, t.n_vs)) \
            or (row[K.L_R_OFF] >= 0 and not _fits(row[K.L_R_OFF], n_out, lists)) \
            or min(row[K.L_I_OFF], row[K.L_A_OFF], row[K.L_R_OFF]) < -1:
        return False

    def in_dim(x):
        return 1 <= x <= _MAX_DIM

    if kind == K.SUMPOOL2D:
        k, s = row[K.L_KH], row[K.L_STRIDE]
        return (in_dim(k) and row[K.L_KW] == k and in_dim(s) and row[K.L_PAD] == 0 and in_dim(row[K.L_IN_H])
                and in_dim(row[K.L_IN_W]) and row[K.L_IN_H] >= k and row[K.L_IN_W] >= k
                and row[K.L_OUT_C] == row[K.L_IN_C] and row[K.L_OUT_H] == (row[K.L_IN_H] - k) // s + 1
                and row[K.L_OUT_W] == (row[K.L_IN_W] - k) // s + 1)
    if row[K.L_W_POOL] not in (0, 1):
        return False
    if kind == K.CONV2D:
        kh, kw, s, p = row[K.L_KH], row[K.L_KW], row[K.L_STRIDE], row[K.L_PAD]
        h, w = row[K.L_IN_H], row[K.L_IN_W]
        # C divides non-negative ints here, so // is its /
        if not (in_dim(kh) and in_dim(kw) and in_dim(s) and 0 <= p <= _MAX_DIM and in_dim(h) and in_dim(w)) \
                or row[K.L_OUT_C] > _MAX_DIM or h + 2 * p < kh or w + 2 * p < kw \
                or row[K.L_OUT_H] != (h + 2 * p - kh) // s + 1 or row[K.L_OUT_W] != (w + 2 * p - kw) // s + 1:
            return False
        fan_in = row[K.L_IN_C] * kh * kw
        if fan_in * row[K.L_OUT_C] > 0x7FFFFFFF or not _fits(row[K.L_W_OFF], fan_in * row[K.L_OUT_C], pool):
            return False
    else:
        fan_in = n_in
        if not _fits(row[K.L_W_OFF], n_in * n_out, pool):
            return False
        if kind == K.RECURRENT:
            fan_in += n_out
            if not _fits(row[K.L_WREC_OFF], n_out * n_out, pool):
                return False
    return row[K.L_W_POOL] == 0 or fan_in <= 65535


def _regions_disjoint(t: Tables) -> bool:
    spans = {0: [], 1: []}     # state space (vs, ist) -> (offset, length) of every region
    for row in t.ltab:
        for field, space in ((K.L_V_OFF, 0), (K.L_I_OFF, 0), (K.L_A_OFF, 0), (K.L_S_OFF, 1), (K.L_R_OFF, 1)):
            if row[field] >= 0:
                spans[space].append((int(row[field]), int(row[K.L_N_OUT])))
    for regions in spans.values():
        regions.sort()
        if any(o1 + n1 > o2 for (o1, n1), (o2, _n2) in zip(regions, regions[1:])):
            return False
    return True


def check_tables(t: Tables) -> int:
    """esnn_model_check of some tables: OK (0) or ERR_MODEL."""
    from . import status as S
    width = t.width
    if not 1 <= t.n_layers <= MAX_LAYERS or t.n_ist < t.n_layers or t.n_vs > 0x7FFFFFFF or t.n_ist > 0x7FFFFFFF:
        return S.ERR_MODEL
    if not all(_layer_ok(t, l, width) for l in range(t.n_layers)):
        return S.ERR_MODEL
    return S.OK if _regions_disjoint(t) else S.ERR_MODEL
