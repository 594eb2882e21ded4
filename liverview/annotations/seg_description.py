"""What liverview writes into a SEG segment's (0062,0006) Segment Description, and reads back: the
label's taxonomy id (so labels without a code, site labels, survive the round trip) and, where the
segment's reader is not the SEG's Content Creator, that reader (so lesions come back as whose they were;
a segment that names nobody is the Content Creator's).

    liverview label metastasis
    liverview label metastasis; reader Dr Walk
    liverview reader Dr Walk

A description that does not follow this (another tool's, or one cut off) names nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: (0062,0006) is LO: 64 characters.
MAX_LENGTH = 64

_DESCRIPTION = re.compile(r"^liverview (?:label (?P<label>[a-z][a-z0-9_]{0,39})(?:; reader (?P<reader>\S.*))?"
                          r"|reader (?P<only_reader>\S.*))$")


@dataclass(frozen=True)
class SegmentNames:
    label: str | None = None
    reader: str | None = None


def write_segment_description(label: str | None, reader: str | None) -> str | None:
    """The description for a segment, or None when it names nothing. A reader whose name would not fit
    is left out (the SEG's Content Creator then stands for the segment)."""
    parts = [f"label {label}"] if label else []
    with_reader = [*parts, f"reader {reader}"] if reader else parts
    for candidate in (with_reader, parts):
        text = "liverview " + "; ".join(candidate)
        if candidate and len(text) <= MAX_LENGTH:
            return text
    return None


def read_segment_description(text: str) -> SegmentNames:
    match = _DESCRIPTION.match(text.strip())
    if match is None:
        return SegmentNames()
    return SegmentNames(match.group("label"), match.group("reader") or match.group("only_reader"))


__all__ = ["MAX_LENGTH", "SegmentNames", "read_segment_description", "write_segment_description"]
