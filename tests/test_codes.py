import pytest

from layers.codes import (
    CHECKS,
    component_classes,
    component_code,
    credit_code,
    credit_code_check_char,
    industries,
    industry_code,
    split_component_code,
    station_code,
)

XINWU = "320214"


# --- component codes (GB/T 30428) ---------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        XINWU + "0101" + "000001",  # 上水井盖
        XINWU + "0118" + "000123",  # 路灯
        XINWU + "0203" + "004567",  # 公交站亭
        XINWU + "0305" + "999999",  # 垃圾箱
        XINWU + "0401" + "000002",  # 古树名木
        XINWU + "0602" + "000010",  # 工地
    ],
)
def test_valid_component_codes(code):
    assert component_code(code) is None


def test_split_component_code():
    assert split_component_code("3202140104000042") == ("320214", "01", "04", "000042")


def test_split_component_code_rejects_bad_shape():
    with pytest.raises(ValueError, match="16"):
        split_component_code("32021401040000")


@pytest.mark.parametrize(
    "code",
    ["320214010400004", "32021401040000421", "", "32021401O4000042", "３２０２１４０１０４０００００４"],
)
def test_component_code_wrong_shape(code):
    reason = component_code(code)
    assert reason is not None and "16" in reason


def test_component_code_unknown_minor_class():
    reason = component_code(XINWU + "0199" + "000001")
    assert reason is not None and "01/99" in reason


def test_component_code_unknown_major_class():
    reason = component_code(XINWU + "0701" + "000001")
    assert reason is not None and "major class 07" in reason


@pytest.mark.parametrize("county", ["320200", "320000", "020214", "920214"])
def test_component_code_county_not_county_level(county):
    reason = component_code(county + "0101" + "000001")
    assert reason is not None and county in reason


def test_component_code_not_a_string():
    assert "str" in component_code(3202140101000001)


# --- class table ---------------------------------------------------------------------


def test_class_table_integrity():
    classes = component_classes()
    keys = [(c.major_code, c.minor_code) for c in classes]
    assert len(keys) == len(set(keys))
    assert {c.major_code for c in classes} == {"01", "02", "03", "04", "05", "06"}
    for c in classes:
        assert len(c.minor_code) == 2 and c.minor_code.isdigit() and c.minor_code != "00"
        assert c.major_name and c.minor_name
    # one name per major code
    names = {}
    for c in classes:
        assert names.setdefault(c.major_code, c.major_name) == c.major_name
    assert names == {
        "01": "公用设施",
        "02": "道路交通",
        "03": "市容环境",
        "04": "园林绿化",
        "05": "房屋土地",
        "06": "其他设施",
    }


def test_class_table_known_entries():
    by_key = {(c.major_code, c.minor_code): c.minor_name for c in component_classes()}
    assert by_key[("01", "01")] == "上水井盖"
    assert by_key[("01", "04")] == "雨水箅子"
    assert by_key[("01", "11")] == "燃气井盖"
    assert by_key[("02", "02")] == "停车咪表"
    assert by_key[("03", "01")] == "公共厕所"
    assert by_key[("04", "01")] == "古树名木"


def test_component_classes_returns_a_copy():
    component_classes().clear()
    assert len(component_classes()) > 60


# --- unified social credit codes (GB 32100) ------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "91350100M000100Y43",  # example commonly cited for GB 32100
        "914403001922038216",  # 华为技术有限公司
        "91440300708461136T",  # 深圳市腾讯计算机系统有限公司
        "91110108551385082Q",  # 小米科技有限责任公司
    ],
)
def test_real_credit_codes_are_valid(code):
    assert credit_code(code) is None
    assert credit_code_check_char(code[:17]) == code[17]


def test_credit_code_check_digit_zero():
    # 31 - (sum mod 31) == 31 must map to '0', not index out of range.
    candidates = (f"9132021400000{n:04d}" for n in range(10000))
    first17 = next(c for c in candidates if credit_code_check_char(c) == "0")
    assert credit_code(first17 + "0") is None


def test_credit_code_corrupted_check_digit_names_right_char():
    reason = credit_code("914403001922038217")
    assert reason is not None
    assert "校验位" in reason and "should be 6" in reason


@pytest.mark.parametrize("bad", ["I", "O", "Z", "S", "V"])
def test_credit_code_forbidden_letters(bad):
    code = "91440300708461136" + bad
    reason = credit_code(code)
    assert reason is not None and "第18位" in reason and repr(bad) in reason


def test_credit_code_lower_case_is_rejected():
    reason = credit_code("91440300708461136t")
    assert reason is not None and "非法字符" in reason


@pytest.mark.parametrize("code", ["", "91440300708461136", "91440300708461136TT"])
def test_credit_code_wrong_length(code):
    reason = credit_code(code)
    assert reason is not None and f"got {len(code)}" in reason


def test_credit_code_admin_division_must_be_digits():
    first17 = "91A40300708461136"
    reason = credit_code(first17 + credit_code_check_char(first17))
    assert reason is not None and "3–8" in reason


def test_credit_code_check_char_rejects_bad_input():
    with pytest.raises(ValueError):
        credit_code_check_char("9144030070846113")
    with pytest.raises(ValueError):
        credit_code_check_char("9144030070846113I")


# --- industry codes (GB/T 4754-2017) -------------------------------------------------


@pytest.mark.parametrize("code", ["C3982", "C3973", "C3360", "C1713", "D4411", "N7721"])
def test_valid_industry_codes(code):
    assert industry_code(code) is None


def test_industry_names():
    table = industries()
    assert table["C2614"] == "有机化学原料制造"
    assert table["C3982"] == "电子电路制造"
    assert table["D4620"] == "污水处理及其再生利用"
    assert 40 <= len(table) <= 60


def test_industry_code_shape():
    for bad in ["3982", "c3982", "C398", "C39821", "CC3982", " C3982"]:
        reason = industry_code(bad)
        assert reason is not None and "C3982" in reason, bad


def test_industry_code_not_in_table():
    reason = industry_code("A0111")  # 稻谷种植: a real class, but not one we track
    assert reason is not None and "A0111" in reason


def test_industries_returns_a_copy():
    industries().clear()
    assert industry_code("C3982") is None


# --- station codes -------------------------------------------------------------------


@pytest.mark.parametrize("code", ["A", "XW-AQ-001", "wuxi_320214_07", "x" * 32])
def test_valid_station_codes(code):
    assert station_code(code) is None


@pytest.mark.parametrize("code", ["", "x" * 33, "XW 001", "XW/001", "站点1", "XW-001\n", "ＸＷ001"])
def test_invalid_station_codes(code):
    assert station_code(code) is not None


# --- registry ------------------------------------------------------------------------


def test_checks_registry():
    assert set(CHECKS) == {"camera_id", "component_code", "credit_code", "industry_code", "station_code"}
    assert CHECKS["camera_id"]("32021400001320000001") is None
    assert CHECKS["component_code"]("3202140101000001") is None
    assert CHECKS["credit_code"]("914403001922038216") is None
    assert CHECKS["industry_code"]("C3982") is None
    assert CHECKS["station_code"]("XW-001") is None
    for check in CHECKS.values():
        assert check(None) is not None
