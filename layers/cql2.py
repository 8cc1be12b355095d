"""Parsing CQL2 filters (OGC API Features Part 3) in both encodings into pygeofilter's AST.

pygeofilter parses both. Its CQL2-text grammar predates CQL2 1.0 in places, so we load that
grammar and extend it (function-call temporal operators, T_STARTS … T_DISJOINT, S_DWITHIN,
BBOX literals, NOT ( … ) around any condition, INTERVAL with '..' and dates); CQL2-JSON gets
the same operators by a small rewrite before pygeofilter walks it. A syntax error is a 400
that says where.
"""

import json
import logging
from datetime import date, datetime
from pathlib import Path

import pygeofilter.parsers.cql2_text.parser as cql2_text
from lark import Lark, v_args
from lark import logger as lark_logger
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_json.parser import walk_cql_json

from twin.errors import ApiError

LANGS = ("cql2-text", "cql2-json")
MAX_LENGTH = 50_000
WHERE = "query.filter"

_GRAMMAR = Path(cql2_text.__file__).with_name("grammar.lark")
_EXTENSION = r"""
%extend predicate: _binary_temporal_predicate_func "(" expression "," expression ")" -> temporal_call
                 | TEMPORAL_2024 "(" expression "," expression ")" -> temporal_call
                 | "S_DWITHIN"i "(" expression "," expression "," full_number ")" -> dwithin
%extend condition_1: "NOT"i "(" condition ")" -> not_
%extend interval: "INTERVAL" "(" SINGLE_QUOTED "," SINGLE_QUOTED ")" -> open_interval
%extend spatial_predicate: _binary_spatial_predicate_func "(" _with_bbox ")" -> binary_spatial_predicate
_with_bbox: expression "," bbox_literal | bbox_literal "," expression
bbox_literal: "BBOX" "(" full_number "," full_number "," full_number "," full_number ")"
TEMPORAL_2024.2: "T_STARTS"i | "T_STARTEDBY"i | "T_FINISHES"i | "T_FINISHEDBY"i | "T_DISJOINT"i
"""


class TimeIntersects(ast.TemporalPredicate):
    """CQL2 T_INTERSECTS (pygeofilter reads it as T_OVERLAPS, which is a different relation)."""


TEMPORAL_OPS = {
    "t_before": ast.TimeBefore, "t_after": ast.TimeAfter, "t_meets": ast.TimeMeets, "t_metby": ast.TimeMetBy,
    "t_overlaps": ast.TimeOverlaps, "t_overlappedby": ast.TimeOverlappedBy, "t_starts": ast.TimeBegins,
    "t_begins": ast.TimeBegins, "t_startedby": ast.TimeBegunBy, "t_begunby": ast.TimeBegunBy,
    "t_during": ast.TimeDuring, "t_contains": ast.TimeContains, "t_finishes": ast.TimeEnds, "t_ends": ast.TimeEnds,
    "t_finishedby": ast.TimeEndedBy, "t_endedby": ast.TimeEndedBy, "t_equals": ast.TimeEquals,
    "t_disjoint": ast.TimeDisjoint, "t_intersects": TimeIntersects,
}


def moment(text: str) -> date | datetime | None:
    if text == "..":
        return None
    return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)


@v_args(meta=False, inline=True)
class _Transformer(cql2_text.CQLTransformer):
    def binary_temporal_predicate(self, lhs, op, rhs):
        return TEMPORAL_OPS[str(op).lower()](lhs, rhs)

    def temporal_call(self, op, lhs, rhs):
        return TEMPORAL_OPS[str(op).lower()](lhs, rhs)

    def dwithin(self, lhs, rhs, distance):
        return ast.DistanceWithin(lhs, rhs, distance, "meters")

    def open_interval(self, start, end):
        return values.Interval(moment(start), moment(end))

    def bbox_literal(self, minx, miny, maxx, maxy):
        return values.Envelope(minx, maxx, miny, maxy)


lark_logger.setLevel(logging.WARNING)  # pygeofilter sets DEBUG; our extension's resolved NOT ( … ) conflict is noise
_text_parser = Lark(_GRAMMAR.read_text("utf-8") + _EXTENSION, parser="lalr", maybe_placeholders=False,
                    transformer=_Transformer(), import_paths=[str(_GRAMMAR.parent.parent)],
                    source_path=str(_GRAMMAR))


def _json_rewrite(node):
    """CQL2-JSON 1.0 forms pygeofilter lacks or reads differently, turned into AST nodes first."""
    if isinstance(node, list):
        return [_json_rewrite(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "bbox" in node and len(node) == 1:
        box = node["bbox"]
        if not (isinstance(box, list) and len(box) == 4):
            raise ValueError("a bbox literal has 4 numbers: [minx, miny, maxx, maxy]")
        return values.Envelope(box[0], box[2], box[1], box[3])
    node = {key: _json_rewrite(value) for key, value in node.items()}
    op, args = node.get("op"), node.get("args")
    if not isinstance(op, str) or not isinstance(args, list):
        return node
    args = [walk_cql_json(a) for a in args] if op in TEMPORAL_OPS or op in ("s_dwithin", "between") else args
    if op in TEMPORAL_OPS and len(args) == 2:
        return TEMPORAL_OPS[op](*args)
    if op == "s_dwithin" and len(args) == 3:
        return ast.DistanceWithin(args[0], args[1], args[2], "meters")
    if op == "between" and len(args) == 3:
        return ast.Between(args[0], args[1], args[2], False)
    return node


def _syntax_error(e: UnexpectedInput, text: str) -> ApiError:
    column = getattr(e, "column", None)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        problem = "the filter ends too early"
    elif isinstance(e, UnexpectedCharacters):
        problem = f"unexpected character {text[e.pos_in_stream]!r} at position {column}"
    else:
        problem = f"unexpected {str(e.token)!r} at position {column}"
    return ApiError(400, "invalid_filter", f"CQL2 text syntax error: {problem}", where=WHERE)


def parse(text: str, lang: str):
    """The AST of a CQL2 filter in `lang`; 400 with the position of a syntax error."""
    if lang not in LANGS:
        raise ApiError(400, "invalid_parameter", f"filter-lang must be one of {', '.join(LANGS)}",
                       where="query.filter-lang")
    if not text.strip():
        raise ApiError(400, "invalid_filter", "The filter is empty", where=WHERE)
    if len(text) > MAX_LENGTH:
        raise ApiError(400, "invalid_filter", f"The filter is longer than {MAX_LENGTH} characters", where=WHERE)
    try:
        if lang == "cql2-text":
            return _text_parser.parse(text)
        return walk_cql_json(_json_rewrite(json.loads(text)))
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from e
    except json.JSONDecodeError as e:
        raise ApiError(400, "invalid_filter", f"CQL2 JSON is not JSON: {e.msg} at position {e.pos + 1}",
                       where=WHERE) from e
    except RecursionError as e:
        raise ApiError(400, "invalid_filter", "The filter is nested too deeply", where=WHERE) from e
    except (VisitError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        cause = e.orig_exc if isinstance(e, VisitError) else e
        raise ApiError(400, "invalid_filter", f"Invalid CQL2 ({lang}): {cause}", where=WHERE) from e
