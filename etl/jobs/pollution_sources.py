"""污染源 from the ecology and environment bureau (排污许可 and 重点排污单位 lists)."""

LAYERS = ("pollution_sources",)
ALIASES = {"信用代码": "credit_code", "社会信用代码": "credit_code", "uscc": "credit_code", "企业名称": "name",
           "单位名称": "name", "行业类别代码": "industry_code", "行业": "industry_name", "管理类别": "permit_class",
           "许可证编号": "permit_id", "重点排污单位": "key_unit", "是否重点单位": "key_unit"}
