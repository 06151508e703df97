"""Properties of the dm-log-userspace server's decoding (hypothesis): on
arbitrary datagrams, and on well-framed requests of any type carrying any
payload (a CTR string of any words among them), the server answers or
drops, no exception escapes its dispatch, every answer is a reply the
kernel's framing rules take, and the server keeps serving."""
from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopcore import errors
from loopcore.dmlog import DirtyLogServer, disklog
from loopcore.dmlog import protocol as P
from loopcore.dmlog.ctr import parse_ctr

from fuzz_targets import answer_checked, check_still_serving
from properties import examples

UUIDS = st.sampled_from([b"LVM-p1", b"LVM-p2", b"", b"x" * 128])
CTR_WORDS = st.lists(st.one_of(
    st.sampled_from(["clustered-core", "clustered-disk", "core", "1024", "64", "2", "0", "-1",
                     "+8", "1_024", "\u0661", "sync", "nosync", "block_on_error", "7:0",
                     "/dev/loop0", "1" * 30]),
    st.from_regex(r"[0-9]{1,8}", fullmatch=True), st.text(max_size=6)), max_size=7)


@st.composite
def ctr_payload(draw: st.DrawFn) -> bytes:
    text = " ".join(draw(CTR_WORDS)).encode("utf-8", "surrogatepass")
    return text + (b"\0" if draw(st.booleans()) else b"")


@st.composite
def request(draw: st.DrawFn) -> bytes:
    """A datagram as the kernel frames one (any type, version, payload),
    sometimes cut short or with a byte changed."""
    rtype = draw(st.sampled_from(list(P.RequestType)) | st.integers(0, 255))
    data = draw(ctr_payload()) if rtype == P.RT.CTR else draw(st.binary(max_size=64))
    raw = bytearray(P.build_request(rtype, draw(st.integers(0, 2 ** 32 - 1)), draw(UUIDS),
                                    draw(st.integers(0, 3)), data,
                                    version=draw(st.integers(0, 5))))
    if draw(st.integers(0, 4)) == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    if raw and draw(st.integers(0, 4)) == 0:
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


DATAGRAMS = st.one_of(request(), st.binary(max_size=300))


@pytest.fixture
def server(tmp_path, monkeypatch):
    # a disk log's device is never a real one here: "7:0" would be /dev/loop0
    monkeypatch.setattr(disklog, "resolve_device",
                        lambda device: str(tmp_path / "nonexistent" / "log"))
    srv = DirtyLogServer(lock_file=None, state_dir=None)
    yield srv
    for log in srv._logs.values():
        log.close()


@examples(400)
@given(st.lists(DATAGRAMS, min_size=1, max_size=8))
def test_any_datagrams_are_answered_or_dropped(server, datagrams):
    for datagram in datagrams:
        try:
            answer_checked(server, datagram)
        except P.ProtocolError:
            pass  # the parse_datagram in the check, for a datagram the server dropped
    check_still_serving(server)


@examples(500)
@given(ctr_payload())
def test_any_ctr_string_parses_or_is_refused(data):
    try:
        args = parse_ctr(data)
    except errors.ValueError:
        return
    assert args.length >= 1 and args.region_size >= 2
    assert args.region_size & (args.region_size - 1) == 0
    # only decimal digits are numbers (not int()'s "+8" or "1_024")
    words = args.text.split()
    assert words[0].isdigit() and str(args.region_size) in words


@examples(300)
@given(st.binary(max_size=400))
def test_parse_datagram_raises_only_protocol_error(data):
    try:
        P.parse_datagram(data)
    except P.ProtocolError:
        pass


def test_no_example_touches_a_real_disk_log(server):
    reply = P.parse_reply(server.handle_datagram(
        P.build_request(P.RT.CTR, 1, b"LVM-d", 1, b"1024 clustered-disk 7:0 64")))
    assert reply.error < 0 and not os.path.exists("/nonexistent")
