"""城市部件 from the city-management department (数字城管 component census)."""

import pandas as pd

LAYERS = ("city_components",)
ALIASES = {"部件编码": "code", "标识码": "code", "objcode": "code", "bjbm": "code", "部件类型": "class_name",
           "部件名称": "class_name", "状态": "status", "权属单位": "owner_unit", "所属街道": "street_code",
           "设置时间": "installed_on"}


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill 大类/小类 from the 16-digit code when the source leaves them out."""
    if "code" not in frame:
        return frame
    codes = frame["code"].astype("string").str.strip()
    codes = codes.where(codes.str.fullmatch(r"\d{16}", na=False))
    # GB/T 30428: county code (6) + 大类 (2) + 小类 (2) + serial (6), see layers.codes.split_component_code
    for column, start in (("major_class", 6), ("minor_class", 8)):
        derived = codes.str.slice(start, start + 2)
        frame[column] = frame[column].where(frame[column].notna(), derived) if column in frame else derived
    return frame
