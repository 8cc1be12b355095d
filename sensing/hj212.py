"""HJ 212-2017 (污染物在线监控（监测）系统数据传输标准): frames, data segments and the data commands.

A frame is `##` + 4-digit segment length + data segment + CRC (4 hex digits) + `\\r\\n`. This module
parses frames into `Packet`s, builds frames and the platform's responses, and refuses bad input with
an `Hj212Refusal` that carries a machine code and a reason a person can act on. It knows nothing of
sockets or storage: `sensing.hj212_listener` reads the frames, a sink stores the packets.
"""

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")
MAX_SEGMENT_LENGTH = 9999  # the length field has four decimal digits
HEADER_LENGTH = 6  # "##" + 4 digits
TRAILER_LENGTH = 6  # 4 hex digits of CRC + "\r\n"
MAX_FRAME_LENGTH = HEADER_LENGTH + MAX_SEGMENT_LENGTH + TRAILER_LENGTH

DATA_COMMANDS = {"2011": "real-time", "2051": "minute", "2061": "hourly", "2031": "daily"}
MEASURED_FIELDS = ("Rtd", "Avg", "Min", "Max", "Cou")
DATA_FLAGS = {"N": "normal", "F": "stopped", "M": "maintenance", "S": "manual set value", "D": "fault",
              "C": "calibration", "T": "above the measuring range", "B": "communication fault"}
FUTURE_TOLERANCE = timedelta(days=1)

SYSTEM_INTERACTION = "91"
DATA_RESPONSE = "9014"
REQUEST_RESPONSE = "9011"
NOTIFICATION_RESPONSE = "9013"
FLAG_RESPONSE_ASKED = 0b01  # bit A
FLAG_SPLIT = 0b10  # bit D: PNUM and PNO present
FLAG_2017_NO_RESPONSE = 4  # V0=1 (the 2017 edition), A=0

QN_PATTERN = re.compile(r"\d{17}")
NUMBER_PATTERN = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
HEADER_FIELDS = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")


class Hj212Refusal(ValueError):
    """A packet the platform will not store: `code` for counters, `reason` for the person reading the log."""

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class UnknownDevice(Hj212Refusal):
    """Raised by a sink: no registered Thing has this MN."""

    def __init__(self, mn: str):
        super().__init__("unknown_device", f"MN {mn!r} is not a registered device")
        self.mn = mn


class UnknownFactor(Hj212Refusal):
    """Raised by a sink: the device has no Datastream for this factor code."""

    def __init__(self, mn: str, factor: str):
        super().__init__("unknown_factor", f"device {mn!r} has no datastream for factor {factor!r}")
        self.mn = mn
        self.factor = factor


@dataclass(frozen=True)
class Reading:
    factor: str  # the factor code of HJ 212's appendix B, e.g. w01018
    field: str  # Rtd, Avg, Min, Max or Cou
    value: float
    flag: str | None = None  # the factor's data flag (N, F, M, S, D, C, T, B), if sent


@dataclass(frozen=True)
class Packet:
    qn: str | None  # request number YYYYMMDDhhmmsszzz; a data response echoes it
    st: str  # system code, e.g. 21 surface water, 32 water-pollution source
    cn: str  # command: 2011, 2051, 2061 or 2031
    pw: str
    mn: str  # device number
    flag: int
    data_time: datetime  # Asia/Shanghai, timezone-aware
    readings: list[Reading]
    pnum: int | None = None
    pno: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # CP fields kept as sent: w01018-ZsRtd, w01018-EFlag, …

    @property
    def response_asked(self) -> bool:
        return bool(self.flag & FLAG_RESPONSE_ASKED)

    @property
    def interval(self) -> str:
        return DATA_COMMANDS[self.cn]


def crc16(data: bytes) -> int:
    """The CRC of HJ 212-2017 appendix A: the register's high byte is XORed with the input byte and the
    register is shifted by eight before the polynomial rounds (so it is not CRC-16/MODBUS)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ byte
        for _ in range(8):
            carry = crc & 1
            crc >>= 1
            if carry:
                crc ^= 0xA001
    return crc


def frame(segment: str) -> bytes:
    """The frame that carries `segment`: `##`, its length, the segment, its CRC and `\\r\\n`."""
    body = _ascii(segment)
    if len(body) > MAX_SEGMENT_LENGTH:
        raise Hj212Refusal("wrong_length", f"data segment of {len(body)} bytes exceeds {MAX_SEGMENT_LENGTH}")
    return b"##%04d%s%04X\r\n" % (len(body), body, crc16(body))


def unframe(data: bytes) -> str:
    """The data segment of one complete frame, after checking its length field, CRC and ending."""
    if len(data) < HEADER_LENGTH + TRAILER_LENGTH or not data.startswith(b"##"):
        raise Hj212Refusal("malformed_frame", "a frame starts with '##' and has a length, a CRC and '\\r\\n'")
    length_field = data[2:HEADER_LENGTH]
    if not length_field.isdigit():
        raise Hj212Refusal("wrong_length", f"length field {length_field!r} is not four decimal digits")
    declared = int(length_field)
    actual = len(data) - HEADER_LENGTH - TRAILER_LENGTH
    if declared != actual or not data.endswith(b"\r\n"):
        raise Hj212Refusal("wrong_length", f"length field says {declared} bytes, the frame carries {actual}"
                           if declared != actual else "the frame does not end with '\\r\\n'")
    body = data[HEADER_LENGTH:HEADER_LENGTH + declared]
    sent = data[HEADER_LENGTH + declared:-2]
    expected = b"%04X" % crc16(body)
    if sent.upper() != expected:
        raise Hj212Refusal("bad_crc", f"CRC {sent.decode('ascii', 'replace')!r} does not match the data "
                           f"segment (expected {expected.decode()})")
    try:
        return body.decode("ascii")
    except UnicodeDecodeError as error:
        raise Hj212Refusal("malformed_segment", f"byte {error.start} of the data segment is not ASCII") from None


def parse_frame(data: bytes, *, now: datetime | None = None) -> Packet:
    return parse_segment(unframe(data), now=now)


def parse_segment(segment: str, *, now: datetime | None = None) -> Packet:
    """A data command's packet; `now` (default: the clock) bounds DataTime from the future."""
    if not segment.isascii():
        raise Hj212Refusal("malformed_segment", "the data segment has characters that are not ASCII")
    header, cp = _split_cp(segment)
    fields = _header_fields(header)
    qn = fields.get("QN")
    if qn is not None and not QN_PATTERN.fullmatch(qn):
        raise Hj212Refusal("malformed_segment", f"QN {qn!r} is not YYYYMMDDhhmmsszzz")
    for name in ("ST", "CN", "MN"):
        if not fields.get(name):
            raise Hj212Refusal("malformed_segment", f"the data segment has no {name}")
    st, cn, mn = fields["ST"], fields["CN"], fields["MN"]
    if not (st.isdigit() and len(st) == 2):
        raise Hj212Refusal("malformed_segment", f"ST {st!r} is not a two-digit system code")
    if not (cn.isdigit() and len(cn) == 4):
        raise Hj212Refusal("malformed_segment", f"CN {cn!r} is not a four-digit command code")
    if len(mn) > 24:
        raise Hj212Refusal("malformed_segment", f"MN {mn!r} is longer than 24 characters")
    flag = _integer(fields, "Flag", 0, 255, default=0)
    pnum = pno = None
    if flag & FLAG_SPLIT:
        pnum = _integer(fields, "PNUM", 1, 9999)
        pno = _integer(fields, "PNO", 1, pnum)
    if cn not in DATA_COMMANDS:
        supported = ", ".join(f"{code} ({name})" for code, name in DATA_COMMANDS.items())
        raise Hj212Refusal("unsupported_command", f"command CN={cn} is not accepted; accepted are {supported}")
    data_time, readings, extra = _data(cp, now or datetime.now(CHINA))
    return Packet(qn=qn, st=st, cn=cn, pw=fields.get("PW", ""), mn=mn, flag=flag, data_time=data_time,
                  readings=readings, pnum=pnum, pno=pno, extra=extra)


def data_segment(packet: Packet) -> str:
    """The data segment that carries `packet` (the inverse of `parse_segment`)."""
    header = [f"QN={packet.qn}"] if packet.qn else []
    header += [f"ST={packet.st}", f"CN={packet.cn}", f"PW={packet.pw}", f"MN={packet.mn}", f"Flag={packet.flag}"]
    if packet.pnum is not None:
        header += [f"PNUM={packet.pnum}", f"PNO={packet.pno}"]
    groups: dict[str, list[str]] = {}
    flags: dict[str, str] = {}
    for reading in packet.readings:
        groups.setdefault(reading.factor, []).append(f"{reading.factor}-{reading.field}={reading.value!r}")
        if reading.flag is not None:
            flags[reading.factor] = reading.flag
    for factor, flag in flags.items():
        groups[factor].append(f"{factor}-Flag={flag}")
    for key, value in packet.extra.items():
        groups.setdefault(key.split("-", 1)[0], []).append(f"{key}={value}")
    data_time = f"DataTime={packet.data_time.astimezone(CHINA):%Y%m%d%H%M%S}"
    cp = ";".join([data_time] + [",".join(group) for group in groups.values()])
    return ";".join(header) + f";CP=&&{cp}&&"


def data_response(packet: Packet) -> bytes:
    """The platform's 9014 data response to a data packet: it echoes the QN and asks for no answer."""
    return _response(packet, DATA_RESPONSE, "")


def request_response(packet: Packet, qn_rtn: int = 1) -> bytes:
    """The 9011 request response (QnRtn: 1 ready, 2 refused, 3 wrong PW, 4 wrong MN, 5 wrong ST,
    6 wrong Flag, 7 wrong QN, 8 wrong CN, 9 wrong CRC, 100 unknown error)."""
    return _response(packet, REQUEST_RESPONSE, f"QnRtn={qn_rtn}")


def notification_response(packet: Packet) -> bytes:
    return _response(packet, NOTIFICATION_RESPONSE, "")


def _response(packet: Packet, cn: str, cp: str) -> bytes:
    qn = f"QN={packet.qn};" if packet.qn else ""
    return frame(f"{qn}ST={SYSTEM_INTERACTION};CN={cn};PW={packet.pw};MN={packet.mn};"
                 f"Flag={FLAG_2017_NO_RESPONSE};CP=&&{cp}&&")


def _ascii(text: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as error:
        raise Hj212Refusal("malformed_segment", f"character {error.start} of the data segment is not ASCII") from None


def _split_cp(segment: str) -> tuple[str, str]:
    start = segment.find("CP=&&")
    if start < 0:
        raise Hj212Refusal("malformed_segment", "the data segment has no 'CP=&&…&&'")
    if not segment.endswith("&&") or len(segment) < start + len("CP=&&&&"):
        raise Hj212Refusal("malformed_segment", "the CP field does not end with '&&'")
    header = segment[:start]
    if header and not header.endswith(";"):
        raise Hj212Refusal("malformed_segment", "the field before CP does not end with ';'")
    return header[:-1], segment[start + len("CP=&&"):-2]


def _header_fields(header: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in header.split(";") if header else []:
        name, equals, value = item.partition("=")
        if not equals:
            raise Hj212Refusal("malformed_segment", f"field {item!r} is not name=value")
        if name not in HEADER_FIELDS:
            raise Hj212Refusal("malformed_segment", f"unknown field {name!r} before CP")
        if name in fields:
            raise Hj212Refusal("malformed_segment", f"field {name} appears twice")
        fields[name] = value
    return fields


def _integer(fields: dict[str, str], name: str, low: int, high: int, *, default: int | None = None) -> int:
    text = fields.get(name)
    if text is None and default is not None:
        return default
    if text is None or not text.isdigit() or not low <= int(text) <= high:
        raise Hj212Refusal("malformed_segment", f"{name}={text!r} is not a whole number from {low} to {high}")
    return int(text)


def _data(cp: str, now: datetime) -> tuple[datetime, list[Reading], dict[str, str]]:
    data_time = None
    values: dict[tuple[str, str], str] = {}
    extra: dict[str, str] = {}
    for group in cp.split(";"):
        for item in group.split(",") if group else []:
            key, equals, value = item.partition("=")
            if not equals or not key:
                raise Hj212Refusal("malformed_segment", f"CP item {item!r} is not name=value")
            if key == "DataTime":
                if data_time is not None:
                    raise Hj212Refusal("bad_data_time", "DataTime appears twice")
                data_time = _data_time(value, now)
                continue
            factor, dash, suffix = key.partition("-")
            if not dash or not factor or not suffix:
                extra[key] = value
            elif (factor, suffix) in values or key in extra:
                raise Hj212Refusal("malformed_segment", f"{key} appears twice")
            elif suffix in MEASURED_FIELDS or suffix == "Flag":
                values[(factor, suffix)] = value
            else:
                extra[key] = value
    if data_time is None:
        raise Hj212Refusal("bad_data_time", "the CP field has no DataTime=YYYYMMDDhhmmss")
    readings = [Reading(factor, suffix, _number(f"{factor}-{suffix}", text), values.get((factor, "Flag")))
                for (factor, suffix), text in values.items() if suffix != "Flag"]
    measured = {reading.factor for reading in readings}
    extra.update({f"{factor}-Flag": text for (factor, suffix), text in values.items()
                  if suffix == "Flag" and factor not in measured})
    if not readings:
        raise Hj212Refusal("malformed_segment", "the CP field has no factor values (-Rtd, -Avg, -Min, -Max, -Cou)")
    return data_time, readings, extra


def _data_time(text: str, now: datetime) -> datetime:
    if len(text) != 14 or not text.isdigit():
        raise Hj212Refusal("bad_data_time", f"DataTime {text!r} is not YYYYMMDDhhmmss")
    try:
        moment = datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=CHINA)
    except ValueError:
        raise Hj212Refusal("bad_data_time", f"DataTime {text!r} is not a date and time of the calendar") from None
    if moment > now + FUTURE_TOLERANCE:
        raise Hj212Refusal("future_data_time", f"DataTime {text} (China Standard Time) is more than a day "
                           f"ahead of the server's clock ({now.astimezone(CHINA):%Y-%m-%d %H:%M:%S})")
    return moment


def _number(key: str, text: str) -> float:
    if not NUMBER_PATTERN.fullmatch(text) or not math.isfinite(value := float(text)):
        raise Hj212Refusal("non_numeric_value", f"{key}={text!r} is not a number")
    return value
