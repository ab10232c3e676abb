"""The wire protocol's bytes (docs/protocol.md): frames, the resynchronising parser, every payload."""
import struct
import zlib

import numpy as np
import pytest
import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesnn.device import protocol as P
from edgesnn.device.protocol import Err, Frame, FrameParser, Msg, Rejected, frame


def feed_bytewise(parser, data):
    out = []
    for b in data:
        out += parser.feed(bytes([b]))
    return out


# ------------------------------------------------------------------ checks and frame layout
def test_crc16_is_ccitt_false():
    assert P.crc16(b"123456789") == 0x29B1
    assert P.crc16(b"") == 0xFFFF


def test_frame_layout_byte_for_byte():
    f = frame(Msg.ECHO, 0x1234, b"\x01\x02\x03")
    assert f[:2] == b"\xA5\x5A"
    assert f[2] == 1 and f[3] == 0x04
    assert struct.unpack_from("<HH", f, 4) == (0x1234, 3)
    assert struct.unpack_from("<H", f, 8)[0] == P.crc16(f[2:8])
    assert f[10:13] == b"\x01\x02\x03"
    # the frame check covers bytes 2 .. 10+N-1: header fields, header check and payload
    assert struct.unpack_from("<I", f, 13)[0] == zlib.crc32(f[2:13])
    assert len(f) == 3 + P.OVERHEAD


def test_known_frame_vector():
    # a fixed vector the C side can compare against
    assert frame(Msg.HELLO, 7, b"abc").hex() == "a55a0101070003009fe56162635debd068"


@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 3])
def test_round_trip_whole_and_bytewise(payload):
    f = frame(Msg.STEP, 65535, payload)
    assert P.parse_all(f) == [Frame(Msg.STEP, 65535, payload)]
    assert feed_bytewise(FrameParser(), f) == [Frame(Msg.STEP, 65535, payload)]


def test_many_frames_in_arbitrary_chunks():
    frames = [frame(Msg.ECHO, i, bytes([i]) * i) for i in range(40)]
    data = b"".join(frames)
    rng = np.random.default_rng(1)
    p, out, i = FrameParser(), [], 0
    while i < len(data):
        n = int(rng.integers(1, 30))
        out += p.feed(data[i:i + n])
        i += n
    assert [(e.seq, e.payload) for e in out] == [(i, bytes([i]) * i) for i in range(40)]


def test_sequence_number_wraps_to_16_bits():
    assert P.parse_all(frame(1, 65536 + 5))[0].seq == 5


# ------------------------------------------------------------------ resynchronisation
def test_garbage_before_between_and_after():
    a, b = frame(Msg.HELLO, 1), frame(Msg.ECHO, 2, b"zz")
    data = b"\x00\xff\xa5garbage\x5a" + a + b"\xa5\xa5\xa5" + b + b"\xa5"
    p = FrameParser()
    assert [e.seq for e in p.feed(data)] == [1, 2]
    assert p.buffered == 1            # a trailing A5 may start a sync
    assert p.garbage == len(data) - len(a) - len(b) - 1


def test_fake_sync_with_bad_header_check_discards_one_byte_only():
    good = frame(Msg.HELLO, 9)
    # a fake header A5 5A .. whose check fails, and a real frame starting inside it (at byte 2)
    fake = b"\xA5\x5A" + good[:8]
    p = FrameParser()
    assert p.feed(fake + good[8:]) == [Frame(Msg.HELLO, 9, b"")]
    assert p.bad_headers == 1


def test_frame_embedded_after_rejected_header_is_found():
    good = frame(Msg.ECHO, 3, b"hello")
    bad = bytearray(frame(Msg.ECHO, 4, b"x" * 50))
    bad[6] ^= 0x40                    # corrupt the length: the header check fails
    assert P.parse_all(bytes(bad[:12]) + good) == [Frame(Msg.ECHO, 3, b"hello")]
    assert feed_bytewise(FrameParser(), bytes(bad[:12]) + good) == [Frame(Msg.ECHO, 3, b"hello")]


def test_bad_frame_check_is_reported_and_skipped():
    f = bytearray(frame(Msg.ECHO, 5, b"abcd"))
    f[11] ^= 1
    nxt = frame(Msg.HELLO, 6)
    out = P.parse_all(bytes(f) + nxt)
    assert out == [Rejected(Msg.ECHO, 5, Err.CRC, 0, 4), Frame(Msg.HELLO, 6, b"")]


def test_wrong_version_is_skipped_by_its_trusted_length_and_reported():
    bad = frame(Msg.ECHO, 8, b"\xA5\x5A" * 10, version=2)   # sync bytes inside the skipped payload
    nxt = frame(Msg.HELLO, 9)
    for out in (P.parse_all(bad + nxt), feed_bytewise(FrameParser(), bad + nxt)):
        assert out == [Rejected(Msg.ECHO, 8, Err.VERSION, 2, 20, 2), Frame(Msg.HELLO, 9, b"")]


def test_too_long_is_skipped_and_reported_with_max_payload():
    bad = frame(Msg.ECHO, 10, bytes(300))
    nxt = frame(Msg.ECHO, 11, b"ok")
    p = FrameParser(max_payload=256)
    out = p.feed(bad[:20]) + p.feed(bad[20:200]) + p.feed(bad[200:] + nxt)
    assert out == [Rejected(Msg.ECHO, 10, Err.TOO_LONG, 256, 300), Frame(Msg.ECHO, 11, b"ok")]
    assert FrameParser(256).feed(frame(Msg.ECHO, 1, bytes(256)))[0].payload == bytes(256)


def test_truncated_frame_yields_nothing_and_waits():
    f = frame(Msg.ECHO, 12, b"abcdef")
    for cut in range(len(f)):
        p = FrameParser()
        assert p.feed(f[:cut]) == []
        assert p.feed(f[cut:]) == [Frame(Msg.ECHO, 12, b"abcdef")]
    p = FrameParser()
    p.feed(f[:-1])
    p.reset()                          # a new connection forgets the partial frame
    assert p.feed(frame(Msg.HELLO, 1)) == [Frame(Msg.HELLO, 1, b"")]


def test_frames_over_pyserial_loop():
    port = serial.serial_for_url("loop://", timeout=0.2)
    try:
        sent = [frame(Msg.ECHO, i, bytes(range(i * 7 % 256))) for i in range(10)]
        port.write(b"\x00\xa5" + b"".join(sent))
        p, got = FrameParser(), []
        while len(got) < 10:
            data = port.read(64)
            assert data, "loop:// returned nothing before the timeout"
            got += p.feed(data)
        assert [e.payload for e in got] == [f[10:-4] for f in sent]
    finally:
        port.close()


# ------------------------------------------------------------------ property tests
frames_st = st.builds(lambda t, s, p: frame(t, s, p), st.integers(0, 255), st.integers(0, 65535),
                      st.binary(max_size=64))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5), st.data())
def test_parser_never_raises_on_garbage(chunks, data):
    p = FrameParser(max_payload=data.draw(st.integers(0, 100)))
    for c in chunks:
        for ev in p.feed(c):
            assert isinstance(ev, (Frame, Rejected))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=60), frames_st, st.binary(max_size=30), st.integers(1, 16))
def test_valid_frame_in_garbage_is_never_lost(before, good, after, chunk):
    """Garbage before a frame can swallow it only by posing as a valid header (CRC-16 odds, and then
    the parser reports it): check that whenever no header in the garbage holds, the frame comes out."""
    p = FrameParser()
    data = before + good + after
    out = []
    for i in range(0, len(data), chunk):
        out += p.feed(data[i:i + chunk])
    expected = P.parse_all(good)[0]
    fakes = [i for i in range(len(before)) if _header_holds(data, i)]
    if not fakes:
        assert expected in out


def _header_holds(data, i):
    h = data[i:i + 10]
    return len(h) == 10 and h[:2] == P.SYNC and P.crc16(h[2:8]) == struct.unpack_from("<H", h, 8)[0]


@settings(max_examples=100, deadline=None)
@given(st.lists(frames_st, min_size=1, max_size=4), st.binary(max_size=20))
def test_back_to_back_frames_all_come_out(frames, tail):
    out = P.parse_all(b"".join(frames) + tail)
    assert [e for e in out if isinstance(e, Frame)][:len(frames)] == [P.parse_all(f)[0] for f in frames]


# ------------------------------------------------------------------ payloads
def test_info_round_trip():
    info = P.Info(1, 4096, int(P.Cap.UPLOAD | P.Cap.READOUT), 100, 10, 3, 25_000_000, 65536, 65535, 256,
                  bytes(range(32)), "qemu-mps2-an386")
    raw = P.pack_info(info)
    assert len(raw) == 4 + 4 * 8 + 32 + 1 + len("qemu-mps2-an386")
    assert P.unpack_info(raw) == info
    assert info.has(P.Cap.READOUT) and not info.has(P.Cap.CYCLES)
    with pytest.raises(P.Malformed):
        P.unpack_info(raw[:-1])


def test_stats_round_trip():
    s = P.Stats(1, 2, 3, 2**40, 5, 6, 7, 8, 9)
    raw = P.pack_stats(s)
    assert len(raw) == 5 * 8 + 4 * 4
    assert P.unpack_stats(raw) == s
    assert P.pack_stats_request(True) == b"\x01" and P.unpack_stats_request(b"\x00") is False
    for bad, off in ((b"", 0), (b"\x02", 0), (b"\x00\x00", 1)):
        with pytest.raises(P.Malformed) as e:
            P.unpack_stats_request(bad)
        assert e.value.offset == off


def test_step_request_round_trip_and_size():
    steps = [P.StepIn([1, 2, 3]), P.StepIn([], label=4), P.StepIn([65535], reward=-7),
             P.StepIn([0, 0], label=1, reward=2)]
    flags = P.STEP_SPIKES | P.STEP_READOUT
    raw = P.pack_step_request(flags, steps)
    assert len(raw) == P.step_request_size(steps)
    f2, back = P.unpack_step_request(raw)
    assert f2 == flags
    for a, b in zip(steps, back):
        assert list(a.indices) == list(b.indices) and a.label == b.label and a.reward == b.reward
    # record layout: teach, [label], [reward], n_events, indices
    assert raw[:3] == bytes([flags, 4, 0])
    assert raw[3:12] == bytes([0, 3, 0, 1, 0, 2, 0, 3, 0])


def test_step_request_malformed_offsets():
    raw = P.pack_step_request(0, [P.StepIn([1, 2])])
    with pytest.raises(P.Malformed) as e:
        P.unpack_step_request(raw[:-1])               # index array short: offset of its first byte
    assert e.value.offset == 6
    with pytest.raises(P.Malformed) as e:
        P.unpack_step_request(raw + b"\x00")          # trailing byte
    assert e.value.offset == len(raw)
    with pytest.raises(P.Malformed) as e:
        P.unpack_step_request(b"\x08\x01\x00")        # reserved flag bit
    assert e.value.offset == 0
    with pytest.raises(P.Malformed) as e:
        P.unpack_step_request(b"\x00\x01\x00\x04\x00\x00")   # reserved teach bit
    assert e.value.offset == 3


def test_step_reply_round_trip_and_bound():
    n_out = 5
    outs = [P.StepOut(-1, 0, np.array([], np.uint16), np.zeros(n_out, np.int32)),
            P.StepOut(3, 123456, np.array([0, 3, 4], np.uint16), np.array([-5, 2**31 - 1, -2**31, 0, 9], np.int32))]
    for flags in range(8):
        raw = P.pack_step_reply(flags, outs)
        f2, back = P.unpack_step_reply(raw, n_out)
        assert f2 == flags and [o.cls for o in back] == [-1, 3]
        if flags & P.STEP_SPIKES:
            assert [list(o.spikes) for o in back] == [[], [0, 3, 4]]
        if flags & P.STEP_READOUT:
            assert np.array_equal(back[1].v, outs[1].v)
        if flags & P.STEP_CYCLES:
            assert back[1].cycles == 123456
        assert len(raw) <= P.step_reply_bound(2, n_out, flags)
    # every output spiking meets the bound exactly
    full = [P.StepOut(0, 1, np.arange(n_out, dtype=np.uint16), np.zeros(n_out, np.int32))] * 3
    assert len(P.pack_step_reply(7, full)) == P.step_reply_bound(3, n_out, 7) == 3 + 3 * (2 + 4 + 12 + 20)


def test_upload_payloads():
    assert P.unpack_upload_begin(P.pack_upload_begin(1000, 0xDEADBEEF)) == (1000, 0xDEADBEEF)
    assert P.unpack_upload_begin_reply(P.pack_upload_begin_reply(65536, 4092)) == (65536, 4092)
    assert len(P.pack_upload_begin_reply(1, 2)) == 6
    assert P.unpack_upload_chunk(P.pack_upload_chunk(12, b"abc")) == (12, b"abc")
    assert P.unpack_u32(P.pack_u32(77)) == 77
    digest = bytes(range(32))
    assert P.unpack_commit_reply(P.pack_commit_reply(digest)) == digest
    with pytest.raises(P.Malformed):
        P.unpack_upload_begin(b"\x00" * 7)
    with pytest.raises(P.Malformed):
        P.unpack_commit_reply(b"\x00" * 31)


def test_read_payloads():
    raw = P.pack_read_weights(3, 1, 70000, 500)
    assert len(raw) == 9 and P.unpack_read_weights(raw) == (3, 1, 70000, 500)
    assert P.unpack_read_state(P.pack_read_state(2, 0, 5, 6)) == (2, 0, 5, 6)
    w8 = np.array([-128, 0, 127], np.int8)
    w16 = np.array([-32768, 1, 32767], np.int16)
    assert P.pack_weights_reply(w8)[0] == 1 and P.pack_weights_reply(w16)[0] == 2
    for w in (w8, w16):
        back = P.unpack_weights_reply(P.pack_weights_reply(w))
        assert back.dtype == w.dtype and np.array_equal(back, w)
    v = np.array([-2**31, 0, 2**31 - 1], np.int32)
    assert np.array_equal(P.unpack_state_reply(P.pack_state_reply(v)), v)
    with pytest.raises(P.Malformed):
        P.unpack_weights_reply(b"\x02\x00")


def test_error_payload_and_names():
    raw = P.pack_error(Msg.STEP, Err.STEP, -1)
    assert raw == bytes([0x10, 0]) + struct.pack("<Hi", 6, -1)
    e = P.unpack_error(raw)
    assert (e.request, e.code, e.detail, e.code_name) == (0x10, 6, -1, "STEP")
    assert P.msg_name(0x90) == "STEP reply" and P.msg_name(0xFF) == "ERROR" and P.err_name(99) == "code 99"
    assert P.MSG_UPLOAD_CHUNK == 0x21 and P.ERR_ARGUMENT == 16 and P.CAP_READOUT == 32
