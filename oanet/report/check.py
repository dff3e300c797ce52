"""The page of ``oanet check-data``: the verdict, the problems grouped by kind with their files, a sample
of overlays and the per-category counts, from what ``check_report.json`` holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Optional

from oanet.fileio import write_text_atomic
from oanet.report import html as H

REPORT_NAME = "report.html"
MAX_FILES = 1000  # files listed per kind (the rest counted)
SEVERITY_ORDER = ("error", "warning", "info")


def _files_html(kind: Mapping, files: Optional[Iterable[str]]) -> str:
    examples = kind.get("examples", [])
    rows = [[e["file"], e.get("detail", "")] for e in examples]
    out = H.table([("file", "text"), ("detail", "text")], rows, sortable=False, cls="examples") if rows else ""
    listed = sorted(files) if files is not None else []
    if len(listed) > len(examples):
        items = "".join(f"<li>{H.esc(f)}</li>" for f in listed[:MAX_FILES])
        more = f"<p class='note'>… and {len(listed) - MAX_FILES} more</p>" if len(listed) > MAX_FILES else ""
        out += f"<details><summary>all {len(listed)} files</summary><ul class='files'>{items}</ul>{more}</details>"
    elif files is None and kind.get("files", 0) > len(examples):
        out += f"<p class='note'>… and {kind['files'] - len(examples)} more files (check_report.json lists the first)</p>"
    return out


def problems_section(report: Mapping, files: Optional[Mapping[str, Iterable[str]]]) -> str:
    problems = sorted(report.get("problems", []), key=lambda p: SEVERITY_ORDER.index(p["severity"])
                      if p["severity"] in SEVERITY_ORDER else 9)
    if not problems:
        return H.section("problems", "Problems", "<p>No problem found.</p>")
    parts = []
    for p in problems:
        sev = p["severity"]
        where = f"{p['files']} place{'s' if p['files'] != 1 else ''}"
        summary = (f'<span class="sev-{H.esc(sev)}">{H.esc(sev.upper())}</span> <b>{H.esc(p["kind"])}</b>: '
                   f'{p["count"]} in {where} — {H.esc(p["description"])}')
        body = _files_html(p, (files or {}).get(p["kind"]) if files is not None else None)
        parts.append(f'<details class="kind" data-kind="{H.esc(p["kind"])}"{" open" if sev == "error" else ""}>'
                     f"<summary>{summary}</summary>{body}</details>")
    return H.section("problems", "Problems by kind", "".join(parts), "Errors first; click a kind for its files.")


def _distribution(d: Mapping) -> str:
    return f"min {d.get('min')}, median {d.get('median')}, mean {d.get('mean')}, p90 {d.get('p90')}, max {d.get('max')}"


def summary_section(report: Mapping) -> str:
    s = report.get("summary", {})
    facts = [
        ["images (checked)", f"{s.get('images', '?')} ({s.get('checked_images', '?')})"],
        ["annotations", s.get("annotations", "?")],
        ["segments: things / stuff / crowd",
         f"{s.get('segments', '?')}: {s.get('thing_segments', '?')} / {s.get('stuff_segments', '?')} / "
         f"{s.get('crowd_segments', '?')}"],
        ["categories (things)", f"{s.get('categories', '?')} ({s.get('thing_categories', '?')})"],
        ["instances per image", _distribution(s.get("instances_per_image", {}))],
        ["segments per image", _distribution(s.get("segments_per_image", {}))],
        ["checked in", f"{report.get('seconds', '?')} s with {report.get('workers', '?')} worker(s)"],
    ]
    return H.section("dataset", "Dataset", H.table([("", "text"), ("", "text")], facts, sortable=False, cls="facts"))


def categories_section(report: Mapping) -> str:
    cats = report.get("summary", {}).get("per_category", [])
    headers = [("id", "num"), ("category", "text"), ("kind", "text"), ("images", "num"), ("instances", "num"),
               ("crowd", "num"), ("area (px)", "num"), ("mean area", "num")]
    rows = [[H.num(c["id"]), c["name"], "thing" if c["isthing"] else "stuff", H.num(c["images"]),
             H.num(c["instances"]), H.num(c["crowd"]), H.num(c["area"]),
             H.num(c["area"] / max(1, c["instances"] + c["crowd"]) if c["isthing"] else c["area"] / max(1, c["images"]))]
            for c in cats]
    body = '<div class="scroll">' + H.table(headers, rows, table_id="category-table", selftest_column=4) + "</div>"
    return H.section("categories", "Per category", body, "Click a header to sort.")


def overlays_section(report: Mapping, out_dir: Path) -> str:
    overlays = report.get("overlays", [])
    if not overlays:
        return ""
    figures = []
    for path in overlays:
        rel = os.path.relpath(Path(path), out_dir).replace(os.sep, "/") if Path(path).is_absolute() else str(path)
        figures.append(f'<figure><img loading="lazy" src="{H.esc(rel)}" alt="{H.esc(Path(path).name)}">'
                       f"<figcaption>{H.esc(Path(path).name)}</figcaption></figure>")
    return H.section("overlays", "Overlays", f'<div class="overlays">{"".join(figures)}</div>',
                     "A sample: images with an error first, then spread over the split; each titled with its problems.")


def fix_section(report: Mapping) -> str:
    fix = report.get("fix")
    if not fix:
        return ""
    rows = [["areas rewritten", fix.get("areas")], ["bboxes rewritten", fix.get("bboxes")],
            ["segments dropped", fix.get("dropped_segments")], ["annotations dropped", fix.get("dropped_annotations")],
            ["images changed", fix.get("images")], ["written to", fix.get("fixed_json")]]
    rows += [[f"not fixed: {k}", n] for k, n in (fix.get("not_fixed") or {}).items()]
    return H.section("fix", "--fix", H.table([("", "text"), ("", "text")], rows, sortable=False, cls="facts"))


def write_check_report(out_dir: str | Path, report: Mapping,
                       files: Optional[Mapping[str, Iterable[str]]] = None) -> Path:
    """``out_dir/report.html`` from ``report`` (the content of check_report.json); ``files``: every file of
    each kind (``CheckResult.problems.files``), where the JSON keeps the first few."""
    out_dir = Path(out_dir)
    if report.get("ok"):
        verdict = f"no error; {report.get('warnings', 0)} warning(s), {report.get('info', 0)} for the record"
    else:
        verdict = (f"<b class='sev-error'>{report.get('errors', 0)} error(s)</b>, {report.get('warnings', 0)} "
                   "warning(s): fix the errors before training or evaluating")
    subtitle = (f"<code>{H.esc(report.get('panoptic_json'))}</code> with <code>{H.esc(report.get('panoptic_dir'))}"
                f"</code>" + (f" and <code>{H.esc(report['image_dir'])}</code>" if report.get("image_dir") else "")
                + f": {verdict}")
    sections = [problems_section(report, files), fix_section(report), summary_section(report),
                overlays_section(report, out_dir), categories_section(report)]
    text = H.page("oanet check-data", subtitle, [s for s in sections if s])
    return write_text_atomic(out_dir / REPORT_NAME, text)
