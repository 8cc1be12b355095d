"""The HJ 212-2017 codec: frames, the standard's CRC, the four data commands, responses and refusals."""

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensing.hj212 import (CHINA, MAX_SEGMENT_LENGTH, Hj212Refusal, Packet, Reading, UnknownDevice, UnknownFactor,
                           crc16, data_response, data_segment, frame, notification_response, parse_frame,
                           parse_segment, request_response, unframe)

# the sample segment of the standard (a 1062 command), its length and CRC as the standard prints them
STANDARD_SEGMENT = ("QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
                    "CP=&&RtdInterval=30&&")
MN = "010000A8900016F000169DC0"
HEADER = f"QN=20160801085857223;ST=32;CN={{cn}};PW=123456;MN={MN};Flag=5;CP=&&"
NOW = datetime(2016, 8, 2, 9, 0, tzinfo=CHINA)

REAL_TIME = HEADER.format(cn=2011) + ("DataTime=20160801085857;w01018-Rtd=30.5,w01018-Flag=N;"
                                      "w21003-Rtd=1.20,w21003-Flag=N;w00000-Rtd=12.5,w00000-Flag=N&&")
MINUTE = HEADER.format(cn=2051) + ("DataTime=20160801084000;w01018-Min=28.1,w01018-Avg=30.2,w01018-Max=33.0,"
                                   "w01018-Flag=N;w00000-Cou=7.5,w00000-Min=0.1,w00000-Avg=0.2,w00000-Max=0.3&&")
HOURLY = HEADER.format(cn=2061) + ("DataTime=20160801080000;w01018-Cou=452.2,w01018-Min=20.0,w01018-Avg=30.1,"
                                   "w01018-Max=40.0,w01018-Flag=M&&")
DAILY = HEADER.format(cn=2031) + ("DataTime=20160801000000;w21003-Cou=1.5,w21003-Min=0.5,w21003-Avg=0.8,"
                                  "w21003-Max=1.6,w21003-Flag=N&&")


def refusal(code: str, call, *args, **kwargs) -> Hj212Refusal:
    with pytest.raises(Hj212Refusal) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    assert caught.value.reason
    return caught.value


def test_the_standards_sample_segment_has_crc_1c80():
    assert len(STANDARD_SEGMENT) == 101
    assert crc16(STANDARD_SEGMENT.encode()) == 0x1C80
    built = frame(STANDARD_SEGMENT)
    assert built.startswith(b"##0101QN=20160801085857223;")
    assert built.endswith(b"&&1C80\r\n")
    assert unframe(built) == STANDARD_SEGMENT


def test_the_crc_is_not_crc16_modbus():
    # CRC-16/MODBUS of "123456789" is 0x4B37; the standard's algorithm gives another value
    assert crc16(b"123456789") != 0x4B37


def test_real_time_data():
    packet = parse_frame(frame(REAL_TIME), now=NOW)
    assert (packet.qn, packet.st, packet.cn, packet.pw, packet.mn, packet.flag) == (
        "20160801085857223", "32", "2011", "123456", MN, 5)
    assert packet.interval == "real-time" and packet.response_asked
    assert packet.data_time == datetime(2016, 8, 1, 8, 58, 57, tzinfo=CHINA)
    assert packet.data_time.utcoffset() == timedelta(hours=8)
    assert packet.readings == [Reading("w01018", "Rtd", 30.5, "N"), Reading("w21003", "Rtd", 1.2, "N"),
                               Reading("w00000", "Rtd", 12.5, "N")]


def test_minute_hourly_and_daily_data():
    minute = parse_segment(MINUTE, now=NOW)
    assert minute.interval == "minute"
    assert minute.readings == [Reading("w01018", "Min", 28.1, "N"), Reading("w01018", "Avg", 30.2, "N"),
                               Reading("w01018", "Max", 33.0, "N"), Reading("w00000", "Cou", 7.5),
                               Reading("w00000", "Min", 0.1), Reading("w00000", "Avg", 0.2),
                               Reading("w00000", "Max", 0.3)]
    hourly = parse_segment(HOURLY, now=NOW)
    assert hourly.interval == "hourly" and hourly.data_time == datetime(2016, 8, 1, 8, tzinfo=CHINA)
    assert {r.field for r in hourly.readings} == {"Cou", "Min", "Avg", "Max"}
    assert {r.flag for r in hourly.readings} == {"M"}
    daily = parse_segment(DAILY, now=NOW)
    assert daily.interval == "daily" and daily.data_time == datetime(2016, 8, 1, tzinfo=CHINA)
    assert [r.value for r in daily.readings] == [1.5, 0.5, 0.8, 1.6]


@pytest.mark.parametrize("segment", [REAL_TIME, MINUTE, HOURLY, DAILY])
def test_round_trip(segment):
    packet = parse_frame(frame(segment), now=NOW)
    assert parse_frame(frame(data_segment(packet)), now=NOW) == packet


def test_round_trip_of_a_built_packet():
    packet = Packet(qn="20240501120000001", st="21", cn="2011", pw="123456", mn="XW-RIVER-01", flag=4,
                    data_time=datetime(2024, 5, 1, 12, 0, tzinfo=CHINA),
                    readings=[Reading("w01009", "Rtd", 7.31, "N"), Reading("w21003", "Rtd", 0.000123, "T")])
    segment = data_segment(packet)
    assert segment.startswith("QN=20240501120000001;ST=21;CN=2011;PW=123456;MN=XW-RIVER-01;Flag=4;CP=&&")
    assert parse_segment(segment, now=NOW.replace(year=2024, month=5)) == packet


def test_unknown_suffixes_and_parameters_are_kept():
    segment = HEADER.format(cn=2011) + ("DataTime=20160801085857;a34013-Rtd=8.1,a34013-ZsRtd=9.3,a34013-Flag=N,"
                                        "a34013-EFlag=A01;a01011-SampleTime=20160801085800;RtdInterval=30&&")
    packet = parse_segment(segment, now=NOW)
    assert packet.readings == [Reading("a34013", "Rtd", 8.1, "N")]
    assert packet.extra == {"a34013-ZsRtd": "9.3", "a34013-EFlag": "A01",
                            "a01011-SampleTime": "20160801085800", "RtdInterval": "30"}
    assert parse_segment(data_segment(packet), now=NOW) == packet


def test_a_split_packet_carries_pnum_and_pno():
    segment = REAL_TIME.replace("Flag=5;", "Flag=7;PNUM=3;PNO=2;")
    packet = parse_segment(segment, now=NOW)
    assert (packet.flag, packet.pnum, packet.pno) == (7, 3, 2)
    assert parse_segment(data_segment(packet), now=NOW) == packet
    refusal("malformed_segment", parse_segment, REAL_TIME.replace("Flag=5;", "Flag=7;"), now=NOW)
    refusal("malformed_segment", parse_segment, REAL_TIME.replace("Flag=5;", "Flag=7;PNUM=2;PNO=3;"), now=NOW)


def test_the_data_response_echoes_qn_and_asks_for_nothing():
    packet = parse_segment(REAL_TIME, now=NOW)
    response = data_response(packet)
    assert unframe(response) == f"QN=20160801085857223;ST=91;CN=9014;PW=123456;MN={MN};Flag=4;CP=&&&&"
    assert unframe(request_response(packet, 1)).endswith("CN=9011;PW=123456;" f"MN={MN};Flag=4;CP=&&QnRtn=1&&")
    assert ";CN=9013;" in unframe(notification_response(packet))


def test_a_bad_crc_is_refused():
    built = frame(REAL_TIME)
    refusal("bad_crc", unframe, built[:-6] + b"0000\r\n")
    refusal("bad_crc", unframe, built[:-6] + b"ZZZZ\r\n")
    flipped = built.replace(b"w01018-Rtd=30.5", b"w01018-Rtd=30.6")
    refusal("bad_crc", parse_frame, flipped)
    assert parse_frame(built[:-6] + built[-6:-2].lower() + b"\r\n", now=NOW)  # lower-case hex is the same CRC


def test_a_wrong_length_is_refused():
    built = frame(REAL_TIME)
    refusal("wrong_length", unframe, b"##%04d" % (len(REAL_TIME) + 1) + built[6:])
    refusal("wrong_length", unframe, b"##%04d" % (len(REAL_TIME) - 1) + built[6:])
    refusal("wrong_length", unframe, b"##01a1" + built[6:])
    refusal("wrong_length", unframe, built[:-2] + b"\n\n")
    refusal("wrong_length", frame, "x" * (MAX_SEGMENT_LENGTH + 1))
    assert len(frame("x" * MAX_SEGMENT_LENGTH)) == MAX_SEGMENT_LENGTH + 12


def test_a_malformed_frame_is_refused():
    refusal("malformed_frame", unframe, b"")
    refusal("malformed_frame", unframe, frame(REAL_TIME)[1:])
    non_ascii = frame(REAL_TIME.replace("PW=123456", "PW=12345X")).replace(b"12345X", "水".encode()[:2] + b"345X")
    refusal("malformed_segment", unframe, non_ascii[:-6] + b"%04X\r\n" % crc16(non_ascii[6:-6]))


@pytest.mark.parametrize("segment, words", [
    (REAL_TIME.replace("CP=&&", "CP="), "CP"),
    (REAL_TIME[:-2], "&&"),
    (REAL_TIME.replace("MN=" + MN + ";", ""), "MN"),
    (REAL_TIME.replace("ST=32;", ""), "ST"),
    (REAL_TIME.replace("ST=32;", "ST=3x;"), "ST"),
    (REAL_TIME.replace("CN=2011;", "CN=20;"), "CN"),
    (REAL_TIME.replace("QN=20160801085857223", "QN=2016"), "QN"),
    (REAL_TIME.replace("Flag=5;", "Flag=five;"), "Flag"),
    (REAL_TIME.replace("Flag=5;", "Flag=5;Flag=5;"), "twice"),
    (REAL_TIME.replace("Flag=5;", "Flag=5;Foo=1;"), "Foo"),
    (REAL_TIME.replace("Flag=5;", "Flag=5;junk;"), "junk"),
    (REAL_TIME.replace("w21003-Rtd=1.20", "w21003-Rtd"), "w21003"),
    (REAL_TIME.replace("w21003-Flag=N", "w21003-Rtd=2"), "twice"),
    (HEADER.format(cn=2011) + "DataTime=20160801085857;w01018-Flag=N&&", "no factor values"),
    (HEADER.format(cn=2011) + "DataTime=20160801085857&&", "no factor values"),
    (REAL_TIME.replace("Flag=5", "Flag=\u00b2"), "ASCII"),
])
def test_a_malformed_segment_is_refused(segment, words):
    assert words in refusal("malformed_segment", parse_segment, segment, now=NOW).reason


def test_an_unsupported_command_is_refused():
    found = refusal("unsupported_command", parse_frame, frame(STANDARD_SEGMENT), now=NOW)
    assert "1062" in found.reason and "2011" in found.reason
    refusal("unsupported_command", parse_segment, REAL_TIME.replace("CN=2011", "CN=9014"), now=NOW)


@pytest.mark.parametrize("data_time", ["2016080108585", "20161301085857", "20160230085857", "2016080108585x",
                                       "20160801256000"])
def test_a_bad_data_time_is_refused(data_time):
    refusal("bad_data_time", parse_segment, REAL_TIME.replace("DataTime=20160801085857", f"DataTime={data_time}"),
            now=NOW)


def test_a_missing_or_repeated_data_time_is_refused():
    refusal("bad_data_time", parse_segment, REAL_TIME.replace("DataTime=20160801085857;", ""), now=NOW)
    refusal("bad_data_time", parse_segment,
            REAL_TIME.replace("DataTime=20160801085857;", "DataTime=20160801085857;DataTime=20160801085857;"), now=NOW)


def test_a_data_time_more_than_a_day_ahead_is_refused():
    now = datetime(2016, 7, 31, 8, 58, 56, tzinfo=CHINA)  # DataTime is a day and a second ahead
    found = refusal("future_data_time", parse_segment, REAL_TIME, now=now)
    assert "more than a day" in found.reason
    assert parse_segment(REAL_TIME, now=now + timedelta(seconds=1))  # exactly a day ahead is accepted
    assert parse_segment(REAL_TIME)  # against the server's clock


@pytest.mark.parametrize("value", ["abc", "", "NaN", "inf", "1e999", "0x10", "--1", "1.2.3", "1 "])
def test_a_non_numeric_value_is_refused(value):
    found = refusal("non_numeric_value", parse_segment, REAL_TIME.replace("w01018-Rtd=30.5", f"w01018-Rtd={value}"),
                    now=NOW)
    assert "w01018-Rtd" in found.reason


@pytest.mark.parametrize("value, number", [("-1.5", -1.5), ("+2", 2.0), (".5", 0.5), ("3.", 3.0), ("1.2E-3", 0.0012)])
def test_numbers_in_the_forms_devices_send(value, number):
    packet = parse_segment(REAL_TIME.replace("w01018-Rtd=30.5", f"w01018-Rtd={value}"), now=NOW)
    assert packet.readings[0].value == number


def test_the_sinks_refusals_carry_codes():
    assert UnknownDevice("X1").code == "unknown_device" and "X1" in UnknownDevice("X1").reason
    unknown = UnknownFactor("X1", "w99999")
    assert unknown.code == "unknown_factor" and "w99999" in unknown.reason and isinstance(unknown, Hj212Refusal)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_parsed_or_refused(data):
    try:
        parse_frame(data)
    except Hj212Refusal as refused:
        assert refused.code and refused.reason


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="QNSTCPWMFlagDtime=;,&-0123456789.wRtdAvg", max_size=200))
def test_any_segment_is_parsed_or_refused(text):
    try:
        parse_frame(frame(HEADER.format(cn=2011) + text))
    except Hj212Refusal as refused:
        assert refused.code and refused.reason
