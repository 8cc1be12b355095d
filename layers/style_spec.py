"""MapLibre's own check of a layer's style before it is stored: `gl-style-validate`, from MapLibre's style
specification package, judges what layers.style_check leaves to it (property values, expressions, filters). MapLibre
refuses a whole style that fails this check, so a bad value in one layer's style would keep the one map from
loading for everyone.

It is a Node program, installed by `make setup` with the viewer's packages (package.json). Where it is not
installed (an image without Node), styles are checked by layers.style_check alone and each PUT says so in the log.
"""

import asyncio
import json
import logging
import re
import shutil

from twin.errors import ApiError
from twin.settings import REPO_ROOT

log = logging.getLogger("twin.styles")
VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "gl-style-validate"
TIMEOUT_S = 20
INDEX = re.compile(r"\[(\d+)\]")


def installed() -> bool:
    return VALIDATOR.is_file() and shutil.which("node") is not None


def _where(message: str) -> str:
    """`body.layers.0.paint.line-color` from the validator's "layers[0].paint.line-color: color expected, …"."""
    key, separator, _ = message.partition(": ")
    return "body." + INDEX.sub(r".\1", key) if separator and " " not in key else "body"


def _unavailable(reason: str) -> ApiError:
    return ApiError(503, "style_validator_unavailable", f"MapLibre's style validator could not check the style "
                    f"({reason}); retry shortly.", headers={"Retry-After": "10"})


async def validate(style: dict) -> None:
    """Nothing when MapLibre takes `style`; else a 422 with its first error and where it is."""
    if not installed():
        log.warning("gl-style-validate is not installed: a stored style's property values are not checked")
        return
    process = await asyncio.create_subprocess_exec(str(VALIDATOR), "--json", stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(json.dumps(style, ensure_ascii=False).encode()),
                                          TIMEOUT_S)
    except TimeoutError:
        raise _unavailable(f"no answer within {TIMEOUT_S} s") from None
    finally:
        if process.returncode is None:  # timed out, or the request was cancelled
            process.kill()
            await process.wait()
    if process.returncode == 0:
        return
    try:
        errors = [e for e in json.loads(out) if e.get("severity", "error") == "error"]
    except (ValueError, AttributeError, TypeError):
        log.warning("gl-style-validate failed (exit %s): %s", process.returncode, err.decode(errors="replace")[:500])
        raise _unavailable("it failed") from None
    if errors:
        first = str(errors[0].get("message", ""))
        more = f" ({len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ApiError(422, "invalid_style", f"MapLibre refuses the style: {first[:500]}{more}.", where=_where(first))
