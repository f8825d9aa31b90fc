"""Names with a number in them (``top_mosaic_09cm_area{area}.tif``): their regex, their number.

The layouts of :mod:`catalogs.layouts` (one module per data set, read by its catalog builder,
its TorchGeo dataset class and the sample world that writes it, so that each name and pattern
is written once) describe their numbered names as templates; this module turns a template
into the one regex that parses them.
"""

from __future__ import annotations

import re
from functools import cache


@cache
def number_pattern(template: str, field: str) -> re.Pattern[str]:
    """The regex of the names ``template`` gives, with ``{field}`` an integer.

    Args:
        template: a file or folder name with one ``{field}`` placeholder, the rest literal
            (e.g. ``top_mosaic_09cm_area{area}.tif``).
        field: the name of the placeholder.

    Returns:
        The compiled pattern; group 1 holds the number.
    """
    return re.compile(r"(\d+)".join(map(re.escape, template.split("{" + field + "}"))))


def parse_number(name: str, template: str, field: str) -> int | None:
    """The number ``name`` holds where ``template`` puts ``{field}``, or None if it does not fit.

    Args:
        name: a file or folder name.
        template: as for :func:`number_pattern`.
        field: as for :func:`number_pattern`.

    Returns:
        The number, or None if ``name`` is not a name of ``template``.
    """
    match = number_pattern(template, field).fullmatch(name)
    return None if match is None else int(match[1])
