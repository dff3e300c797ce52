"""The kinds of problem ``oanet check-data`` reports, their severity, and the collector. No torch.

Severity: an **error** breaks ``oanet train``/``oanet pq`` (they stop on it) or makes PQ wrong (the GT
``area`` is the PQ union's GT term); a **warning** is suspect but read as intended; **info** is counted
for the user to judge (crowd regions, unused categories).
"""

from __future__ import annotations

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)
EXAMPLES = 5  # files listed per kind

# kind: (severity, what it means). The order is the report's order within a severity.
KINDS: dict[str, tuple[str, str]] = {
    # the JSON
    "bad-category": (ERROR, "category entry without an integer id and a name, or with a bad colour"),
    "duplicate-category-id": (ERROR, "two categories with the same id"),
    "bad-isthing": (ERROR, "isthing is not 0/1 (or true/false)"),
    "bad-image": (ERROR, "image entry without id, file_name and a positive width and height"),
    "duplicate-image-id": (ERROR, "two images with the same id"),
    "duplicate-image-file": (ERROR, "two images with the same file_name"),
    "bad-annotation": (ERROR, "annotation without image_id and a segments_info list"),
    "unknown-image": (ERROR, "annotation of an image id that 'images' does not list (--fix drops it)"),
    "duplicate-annotation": (ERROR, "a second annotation of the same image (only the first is checked)"),
    "image-without-annotation": (ERROR, "image that no annotation describes"),
    "duplicate-png": (ERROR, "two annotations name the same PNG file"),
    "bad-segment": (ERROR, "segment without an integer id in 1..2^24-1 and category_id, or a non-numeric area/bbox"),
    "duplicate-segment-id": (ERROR, "two segments of one image with the same id"),
    "unknown-category": (ERROR, "segment of a category that 'categories' does not declare"),
    # the PNGs and images
    "png-missing": (ERROR, "the annotation's PNG is not in the panoptic folder"),
    "png-unreadable": (ERROR, "the PNG cannot be decoded (truncated, corrupt, not a PNG)"),
    "png-size": (ERROR, "the PNG's size differs from the image's width/height in the JSON"),
    "image-missing": (ERROR, "the image file is not in --image-dir"),
    "image-unreadable": (ERROR, "the image file is not an image Pillow can open"),
    "image-size": (ERROR, "the image file's size differs from its width/height in the JSON"),
    "category-colours": (ERROR, ("PNG colours equal to category colours: a semantic visualisation, not an id map "
                                 "(id = R + 256 G + 256^2 B)")),
    "undeclared-id": (ERROR, "id in the PNG that the image's segments_info does not declare"),
    "segment-not-in-png": (ERROR, "segment of segments_info with no pixel in the PNG (--fix drops it)"),
    "area-mismatch": (ERROR, "segment area differs from its pixel count; PQ uses the GT area (--fix rewrites it)"),
    # suspect
    "bbox-mismatch": (WARNING, "segment bbox differs from its pixel extent (--fix rewrites it)"),
    "isthing-missing": (WARNING, "category without isthing (read as a thing)"),
    "crowd-on-stuff": (WARNING, "iscrowd segment of a stuff category (crowd is for things)"),
    "stuff-repeated": (WARNING, "stuff category with several segments in one image (COCO has one per image)"),
    "empty-image": (WARNING, "image with no segment, or whose PNG is all void"),
    "png-format": (WARNING, "PNG that is not 8-bit RGB/RGBA: read here, misread by the COCO API"),
    # for the record
    "crowd": (INFO, "crowd segments (iscrowd = 1): ignored regions in PQ, never instances in training"),
    "unused-category": (INFO, "declared category that no segment uses"),
    "unreferenced-png": (INFO, "PNG in the panoptic folder that no annotation names"),
}


class Problems:
    """Problems grouped by kind: a count of items, the distinct files, the first ``EXAMPLES`` of them."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.files: dict[str, set] = {}
        self.examples: dict[str, list[tuple[str, str]]] = {}

    def add(self, kind: str, file: str, detail: str = "", n: int = 1) -> None:
        """Record ``n`` items of ``kind`` in ``file`` (one call per file and kind: it is listed once)."""
        if kind not in KINDS:
            raise KeyError(f"unknown problem kind {kind!r}")  # a bug here, not the user's data
        self.counts[kind] = self.counts.get(kind, 0) + n
        files = self.files.setdefault(kind, set())
        examples = self.examples.setdefault(kind, [])
        if file not in files and len(examples) < EXAMPLES:
            examples.append((file, detail))
        files.add(file)

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def total(self, severity: str) -> int:
        return sum(n for kind, n in self.counts.items() if KINDS[kind][0] == severity)

    def kinds(self, severity: str | None = None) -> list[str]:
        """The kinds found, in :data:`KINDS` order, of one severity or all."""
        return [k for k, (sev, _) in KINDS.items() if k in self.counts and severity in (None, sev)]

    def to_list(self) -> list[dict]:
        """Per kind found: kind, severity, description, count, files, examples [{file, detail}]."""
        return [
            {
                "kind": kind,
                "severity": KINDS[kind][0],
                "description": KINDS[kind][1],
                "count": self.counts[kind],
                "files": len(self.files[kind]),
                "examples": [{"file": f, "detail": d} for f, d in self.examples[kind]],
            }
            for severity in SEVERITIES
            for kind in self.kinds(severity)
        ]
