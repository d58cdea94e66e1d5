"""Validation of ground-truth boxes shared by the VOC and COCO readers."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class BoxProblems:
    """Counts of boxes fixed under ``strict_boxes=False``, reported once per data set."""

    def __init__(self) -> None:
        self.clipped = 0
        self.dropped = 0
        self.first = ""

    def report(self, source: str) -> None:
        """Log one warning with the counts (nothing when every box was fine)."""
        if self.clipped or self.dropped:
            log.warning(
                "%s: %d boxes clipped to the image, %d dropped (strict_boxes=False); first: %s",
                source,
                self.clipped,
                self.dropped,
                self.first,
            )


def check_box(
    box: list[float],
    width: float,
    height: float,
    where: str,
    strict: bool,
    problems: BoxProblems,
) -> list[float] | None:
    """Validate one 0-based continuous xyxy box of a ``width`` x ``height`` image.

    Args:
        where: names the file, object and the box as written in the file, for messages.
        strict: raise on a bad box; otherwise a box outside the image is *clipped* to it and a box
            that is empty (x2 <= x1 or y2 <= y1, before or after clipping) is *dropped*.

    Returns:
        The (possibly clipped) box, or None when it is dropped.
    """
    from detect.errors import DetectError

    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        problem = "has x2 < x1" if x2 <= x1 else "has y2 < y1"
    elif x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        problem = f"is outside the {width:g}x{height:g} image"
    else:
        return [x1, y1, x2, y2]
    if strict:
        raise DetectError(f"{where} {problem} (strict_boxes=False clips or drops such boxes)")
    problems.first = problems.first or f"{where} {problem}"
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        problems.dropped += 1
        return None
    problems.clipped += 1
    return [x1, y1, x2, y2]
