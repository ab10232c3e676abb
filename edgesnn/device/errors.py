"""Errors of the device link. LinkError: the bytes did not get through (timeout, closed, not a reply).
DeviceError: the device answered ERROR; it carries the request, the code and the detail."""
from __future__ import annotations

from edgesnn.errors import EdgeSNNError

from .protocol import Err, err_name, msg_name

# What to do about each refusal (the message names what happened; this says what to do next).
_ADVICE = {
    Err.CRC: "bytes were damaged on the link; the device did not act, so the request may be sent again "
             "(check the cable, baud rate and that nothing else writes to the port)",
    Err.VERSION: "the host and the device speak different protocol versions; update the firmware or edgesnn",
    Err.TOO_LONG: "the request is longer than the device's max_payload (HELLO); send smaller requests",
    Err.UNKNOWN: "the device does not know this request; update the firmware",
    Err.MALFORMED: "the payload does not have the layout of docs/protocol.md; a host bug, please report it",
    Err.STEP: "an input index is outside the model's inputs or a step has too many events; nothing ran",
    Err.REPLY_TOO_BIG: "ask for fewer steps, fewer outputs or a smaller range per request",
    Err.NO_UPLOAD: "start an upload with UPLOAD_BEGIN first (Device.upload does it)",
    Err.OFFSET: "resend the chunk at the offset the device expects",
    Err.TOO_BIG: "the model blob does not fit the device's upload buffer; use a smaller model or `edgesnn flash`",
    Err.INCOMPLETE: "send the missing chunks before UPLOAD_COMMIT",
    Err.UPLOAD_CRC: "the assembled blob is damaged; upload it again",
    Err.MODEL: "the blob is not a valid model for this runtime (detail: the runtime status); rebuild it "
               "with firmware_gen.blob.pack(model); the previous model keeps running",
    Err.STATE_TOO_BIG: "the model's state does not fit the device's RAM; use a smaller model",
    Err.UNSUPPORTED: "this device lacks the capability (see Device.info.capabilities)",
    Err.ARGUMENT: "the layer, field or range is outside the model (see Device.info)",
}


class LinkError(EdgeSNNError):
    """The link timed out, closed, or answered something that is not the reply to the request."""


class LinkTimeout(LinkError):
    """No reply in time (the request or its reply may have been lost on the way)."""


class DeviceError(EdgeSNNError):
    """The device answered ERROR. ``request`` (type byte), ``code`` (Err), ``code_name``, ``detail``."""

    def __init__(self, request: int, code: int, detail: int, where: str = ""):
        self.request = int(request)
        self.code = int(code)
        self.code_name = err_name(code)
        self.detail = int(detail)
        what = _describe(self.code, self.detail)
        advice = _ADVICE.get(self.code, "see the error codes in docs/protocol.md")
        super().__init__(f"{where + ': ' if where else ''}the device refused {msg_name(request)} with "
                         f"{self.code_name} ({what}); {advice}")


def _describe(code: int, detail: int) -> str:
    if code == Err.MODEL:
        from firmware_gen import status as S
        return f"runtime status {detail} {S.name(detail)}"
    if code == Err.STEP:
        from firmware_gen import status as S
        return f"runtime status {detail} {S.name(detail)}"
    labels = {Err.VERSION: "version received", Err.TOO_LONG: "max_payload", Err.UNKNOWN: "type",
              Err.MALFORMED: "byte offset", Err.REPLY_TOO_BIG: "max_payload", Err.OFFSET: "expected offset",
              Err.TOO_BIG: "capacity", Err.INCOMPLETE: "bytes received", Err.STATE_TOO_BIG: "bytes needed",
              Err.ARGUMENT: "value"}
    return f"{labels.get(code, 'detail')} {detail}"
