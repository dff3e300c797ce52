"""The report of panoptic predictions in one or more orders: ``oanet evaluate`` (and the demo), ``oanet merge``.

What it reads is what those commands write (COCO panoptic JSON + PNGs per order, ``results.json``,
``order_differences.json``, ``order_measures.json``, ``segment_scores.json``); what it adds is each image's
PQ, from the same matching as ``oanet pq`` (:func:`oanet.evaluation.pq.pq_per_image`: summed over the
images, the per-image statistics are the dataset's, to the bit).

Only a few images get pictures: the ``images`` worst and best by PQ and the ``images`` where the orders
differ most (without a ground truth: the most different, then the first by name). Every image is listed,
by name, PQ and difference, in a table the page builds when it is opened, so a COCO-sized split (5,000
images) gives a page of a few hundred kB.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from oanet.fileio import atomic_write_bytes, read_json, write_text_atomic
from oanet.orders import ORACLE, ORDER_TITLES, ORDERS, order_key
from oanet.report import html as H
from oanet.report import images as I

REPORT_NAME = "report.html"
ASSETS = "report_files"  # the pictures and per-image hover data, beside the page
DEFAULT_IMAGES = 50  # pictures of the N worst, N best and N most different images
GROUPS = ("All", "Things", "Stuff")
METRICS = ("pq", "sq", "rq")


@dataclass
class OrderOutput:
    """One order's predictions: a COCO panoptic JSON and its PNG folder."""

    order: str
    json_path: Path
    png_dir: Path


@dataclass
class PredictionsReport:
    """A report page: its title, sections (HTML) and data; its pictures are in ``assets_dir``.
    :meth:`write` writes it anywhere (the asset paths are made relative to the page)."""

    title: str
    subtitle: str
    sections: list
    data: dict
    assets_dir: Path
    extra_sections: list = field(default_factory=list)  # put before the others (e.g. the demo's run)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        rel = os.path.relpath(self.assets_dir, path.parent).replace(os.sep, "/")
        data = {**self.data, "assets": f"{rel}/" if rel != "." else ""}
        return write_text_atomic(path, H.page(self.title, self.subtitle, [*self.extra_sections, *self.sections], data))


def title_of(order: str) -> str:
    return ORDER_TITLES.get(order, f"{order} order")


def _pair(orders: Sequence[str]) -> tuple[str, ...]:
    """The two orders the page compares (ΔPQ, the disagreement view): score and SRM where both are."""
    if all(o in orders for o in ORDERS):
        return ORDERS
    return tuple(orders[:2]) if len(orders) >= 2 else ()


def _main(orders: Sequence[str]) -> str:
    return "srm" if "srm" in orders else orders[0]


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:60] or "image"


# --------------------------------------------------------------------------------------------
# the numbers


def _per_image_pq(gt: dict, gt_dir: Path, preds: Mapping[str, dict], outputs: Mapping[str, OrderOutput],
                  workers: Optional[int]) -> tuple[dict, dict]:
    """``({order: (N,) PQ per GT image}, {order: pq dict of oanet pq --output})`` from one pass per order."""
    from oanet.evaluation.pq import image_pq, pq_per_image
    from oanet.evaluation.pq_result import PQResult

    per_image, results = {}, {}
    for o, pred in preds.items():
        _, stats, categories = pq_per_image(gt, gt_dir, pred, outputs[o].png_dir, workers=workers)
        per_image[o] = image_pq(stats)
        results[o] = PQResult(categories, stats.sum(axis=0), len(stats)).to_dict()
    return per_image, results


def _differences(names: Sequence[tuple[str, str]], outputs: Mapping[str, OrderOutput], pair: Sequence[str],
                 workers: int) -> dict:
    """{image file name: share of pixels the two orders of ``pair`` disagree on}, read from their PNGs."""
    from oanet.data.png_io import read_id_png
    from oanet.evaluation.differences import panoptic_map_difference
    from oanet.parallel import ordered_thread_map

    def one(entry):
        _, png = entry
        return panoptic_map_difference(read_id_png(outputs[pair[0]].png_dir / png),
                                       read_id_png(outputs[pair[1]].png_dir / png))

    values = ordered_thread_map(one, list(names), max(1, workers), chunk=8, name="oanet-report")
    return {name: value for (name, _), value in zip(names, values)}


def select(records: Sequence[dict], count: int, main: Optional[str], has_diff: bool) -> list[int]:
    """Positions of the images to draw: the ``count`` worst and best by the ``main`` order's PQ and the
    ``count`` that differ most (ties by position); without PQ the most different, then the first ones."""
    if count <= 0 or not records:
        return []
    chosen: list[int] = []
    position = np.arange(len(records))
    if main is not None:
        pq = np.array([r["pq"].get(main) if r["pq"].get(main) is not None else np.nan for r in records], dtype=float)
        valid = position[~np.isnan(pq)]
        by_pq = valid[np.lexsort((valid, pq[valid]))]
        chosen += by_pq[:count].tolist() + by_pq[::-1][:count].tolist()
    if has_diff:
        diff = np.array([r["d"] if r["d"] is not None else 0.0 for r in records], dtype=float)
        differing = position[diff > 0]
        chosen += differing[np.lexsort((differing, -diff[differing]))][:count].tolist()
    if main is None:
        chosen += position[:count].tolist()
    seen: set = set()
    return [k for k in chosen if not (k in seen or seen.add(k))]


# --------------------------------------------------------------------------------------------
# pictures


def _segments_rows(kind: str, infos: Sequence[Mapping], scores: Optional[Mapping]) -> list:
    if kind == "gt":
        return [[int(s["id"]), int(s["category_id"]), int(s.get("area", 0)), int(bool(s.get("iscrowd", 0)))]
                for s in infos]
    by_id = {int(row[0]): row for row in scores or ()}
    return [[int(s["id"]), int(s["category_id"]), int(s.get("area", 0)),
             *(by_id[int(s["id"])][1:3] if int(s["id"]) in by_id else (None, None))] for s in infos]


def _draw_image(job: dict) -> dict:
    """Panels, disagreement view, thumbnail and hover data of one image (runs in a worker thread)."""
    from PIL import Image

    from oanet.data.png_io import read_id_png

    width, height = job["size"]
    rgb = I.read_rgb(job["image_path"], (height, width))
    alpha = 0.55 if rgb is not None else 1.0
    if rgb is None:
        rgb = np.zeros((height, width, 3), dtype=np.uint8)
    panel_size, map_size = I.fit(width, height, I.PANEL_SIDE, enlarge=True), I.fit(width, height, I.MAP_SIDE)
    small = I.resize_rgb(rgb, panel_size)
    assets, key, categories = job["assets"], job["key"], job["categories"]
    panels, maps, segs, ids_of, index_of = {}, {}, {}, {}, {}
    for kind, png, infos, scores in job["layers"]:
        ids = read_id_png(png)
        if ids.shape != (height, width):
            raise ValueError(f"{png}: {ids.shape[1]}x{ids.shape[0]}, the image is {width}x{height}")
        ids_of[kind] = ids
        segment_ids = [s["id"] for s in infos]
        segs[kind] = _segments_rows(kind, infos, scores)
        index_of[kind] = I.index_map(I.sample(ids, panel_size), segment_ids)
        maps[kind] = I.encode_index_map(I.sample(index_of[kind], map_size))
        panels[kind] = f"{key}_{kind}.jpg"
        picture = I.panel(small, index_of[kind], infos, categories, alpha=alpha)
        I.save_jpeg(assets / panels[kind], picture)
        if kind == job["main"]:
            thumb = picture.resize(I.fit(*panel_size, I.THUMB_SIDE), Image.BILINEAR)
    pair = job["pair"]
    if len(pair) == 2:
        mask = I.sample(I.disagreement(ids_of[pair[0]], ids_of[pair[1]]), panel_size)
        infos = next(infos for kind, _, infos, _ in job["layers"] if kind == pair[1])
        panels["diff"] = f"{key}_diff.jpg"
        I.save_jpeg(assets / panels["diff"], I.disagreement_panel(small, mask, index_of[pair[1]], infos, categories))
    thumb_name = f"{key}_thumb.jpg"
    I.save_jpeg(assets / thumb_name, thumb, quality=80)
    data = {"w": map_size[0], "h": map_size[1], "pw": panel_size[0], "ph": panel_size[1], "panels": panels,
            "maps": maps, "segs": segs, "pair": list(pair)}
    atomic_write_bytes(assets / "data" / f"{key}.js",
                       f"OANET_REPORT_DATA({H.json_for_script(key)},{H.json_for_script(H.clean(data))});\n".encode())
    return {"t": thumb_name, "tw": thumb.width, "th": thumb.height}


def _remove_stale(assets: Path, keep: set) -> None:
    """Pictures and data of a previous report in ``assets`` that this one does not use."""
    for folder in (assets, assets / "data"):
        for path in folder.iterdir():
            if path.is_file() and path.relative_to(assets).as_posix() not in keep:
                path.unlink()


# --------------------------------------------------------------------------------------------
# the page


def predictions_report(
    out_dir: str | Path,
    outputs: Sequence[OrderOutput],
    *,
    gt_json: Optional[str | Path] = None,
    gt_dir: Optional[str | Path] = None,
    image_dir: Optional[str | Path] = None,
    results: Optional[Mapping[str, Mapping]] = None,
    measures: Optional[Mapping] = None,
    differences: Optional[Mapping[str, float]] = None,
    scores: Optional[Mapping[str, Mapping]] = None,
    images: int = DEFAULT_IMAGES,
    title: str = "oanet report",
    subtitle: str = "",
    workers: Optional[int] = None,
) -> PredictionsReport:
    """The page of the predictions ``outputs`` (one per order), its pictures written to
    ``out_dir/report_files``. ``results``: ``{"<order>_order": pq dict}`` (else computed here with the
    per-image PQ); ``measures``: the order measures (``order_measures.json``); ``differences``: {image file
    name: share of pixels that differ} (else computed from the PNGs of the two compared orders);
    ``scores``: ``segment_scores.json``. Without ``gt_json`` there is no PQ: the page shows the images
    where the orders differ most."""
    from oanet import viz
    from oanet.parallel import default_workers, ordered_thread_map

    out_dir = Path(out_dir)
    by_order = {o.order: o for o in outputs}
    orders = list(by_order)
    if not orders:
        raise ValueError("a report needs at least one order's predictions")
    preds = {o: read_json(by_order[o].json_path, "prediction") for o in orders}
    anns = {o: {a["image_id"]: a for a in preds[o]["annotations"]} for o in orders}
    infos = [img for img in preds[orders[0]]["images"] if all(img["id"] in anns[o] for o in orders)]
    gt = read_json(gt_json, "ground-truth") if gt_json is not None else None
    gt_anns: dict = {}
    if gt is not None:
        wanted = {img["id"] for img in infos}
        gt_anns = {a["image_id"]: a for a in gt["annotations"] if a["image_id"] in wanted}
        gt_images = {img["id"]: img for img in gt["images"]}
        infos = [gt_images.get(img["id"], img) for img in infos if img["id"] in gt_anns]
        gt = {**gt, "images": infos, "annotations": [gt_anns[img["id"]] for img in infos]}
    categories = viz.categories_by_id((gt or preds[orders[0]]).get("categories", []))
    workers = default_workers() if workers is None else max(1, int(workers))
    pair, main = _pair(orders), _main(orders)

    per_image: dict = {}
    if gt is not None and infos:
        per_image, computed = _per_image_pq(gt, Path(gt_dir), {o: {**preds[o], "annotations": [
            anns[o][img["id"]] for img in infos]} for o in orders}, by_order, workers)
        results = {order_key(o): (results or {}).get(order_key(o)) or computed[o] for o in orders}
    png_names = [(img["file_name"], anns[orders[0]][img["id"]]["file_name"]) for img in infos]
    if differences is None and len(pair) == 2:
        differences = _differences(png_names, by_order, pair, workers)
    records = []
    for k, img in enumerate(infos):
        gt_cats = sorted({int(s["category_id"]) for s in gt_anns[img["id"]]["segments_info"]
                          if not s.get("iscrowd")}) if gt is not None else []
        records.append({
            "n": img["file_name"], "pq": {o: float(per_image[o][k]) if o in per_image else None for o in orders},
            "d": None if differences is None else differences.get(img["file_name"]), "c": gt_cats,
        })

    assets = out_dir / ASSETS
    (assets / "data").mkdir(parents=True, exist_ok=True)
    chosen = select(records, images, main if per_image else None, differences is not None and len(pair) == 2)
    jobs = []
    for k in chosen:
        img = infos[k]
        key = f"{k:05d}-{_safe(Path(img['file_name']).stem)}"
        layers = []
        if gt is not None:
            ann = gt_anns[img["id"]]
            layers.append(("gt", Path(gt_dir) / ann["file_name"], ann["segments_info"], None))
        for o in orders:
            ann = anns[o][img["id"]]
            layers.append((o, by_order[o].png_dir / ann["file_name"], ann["segments_info"],
                           (scores or {}).get(order_key(o), {}).get(ann["file_name"])))
        jobs.append({"key": key, "size": (int(img["width"]), int(img["height"])), "assets": assets,
                     "image_path": Path(image_dir) / img["file_name"] if image_dir else None,
                     "layers": layers, "categories": categories, "main": main, "pair": pair})
    shown = []
    for k, job, drawn in zip(chosen, jobs, ordered_thread_map(_draw_image, jobs, workers, name="oanet-report")):
        shown.append({**records[k], "k": job["key"], **drawn})
    keep = {f"data/{job['key']}.js" for job in jobs}
    keep |= {f"{job['key']}_{kind}.jpg" for job in jobs for kind in ("gt", *orders, "diff", "thumb")}
    _remove_stale(assets, keep)

    sections = []
    if results is not None and gt is not None:
        sections.append(summary_section(results, orders, pair))
    sections.append(browser_section(records, shown, orders, pair, main, bool(per_image), differences is not None,
                                    images))
    if measures:
        sections.append(measures_section(measures))
    if results is not None and gt is not None:
        sections.append(per_class_section(results, orders, pair, categories, gt_anns.values(), main))
    data = {
        "orders": orders, "titles": {o: title_of(o) for o in orders}, "pair": list(pair), "main": main,
        "has_gt": bool(per_image), "total": len(records),
        "cats": {str(cid): [str(c.get("name", cid)), int(bool(c.get("isthing", 1)))] for cid, c in categories.items()},
        "images": shown,
        "all": [[r["n"], *(r["pq"][o] for o in orders if per_image), *([r["d"]] if differences is not None else [])]
                for r in records],
    }
    return PredictionsReport(title, subtitle, sections, data, assets)


# --------------------------------------------------------------------------------------------
# sections


def summary_section(results: Mapping[str, Mapping], orders: Sequence[str], pair: Sequence[str]) -> str:
    headers = [("", "text"), ("n", "num")]
    groups = [("", 2)]
    for o in orders:
        headers += [(m.upper(), "num") for m in METRICS]
        groups.append((title_of(o), 3))
    if len(pair) == 2:
        headers += [(f"Δ{m.upper()}", "num") for m in METRICS]
        groups.append((f"{title_of(pair[1])} − {title_of(pair[0])}", 3))
    rows = []
    for g in GROUPS:
        row = [g, H.num(results[order_key(orders[0])][g].get("n", 0))]
        for o in orders:
            row += [H.pct(results[order_key(o)][g][m]) for m in METRICS]
        if len(pair) == 2:
            a, b = results[order_key(pair[0])][g], results[order_key(pair[1])][g]
            row += [H.pct(b[m] - a[m], signed=True) for m in METRICS]
        rows.append(row)
    signed = range(2 + 3 * len(orders), 2 + 3 * len(orders) + 3)
    body = H.table(headers, rows, groups=groups, signed_columns=signed, sortable=False, table_id="summary-table")
    return H.section("summary", "Summary", body, "Panoptic quality in %; <i>n</i>: the categories that occur.")


def measures_section(measures: Mapping) -> str:
    accuracy = measures.get("pairwise_order_accuracy", {})
    levels = measures.get("pq_th_by_occlusion", {})
    orders = list(accuracy) or list(levels)
    rows = [[title_of(o), H.num(accuracy.get(o), 2)] for o in orders]
    first = H.table([("order", "text"), ("pairwise order accuracy %", "num")], rows, sortable=False)
    headers, groups = [("occlusion", "text"), ("GT instances", "num")], [("", 2)]
    for o in orders:
        headers += [("PQ_th", "num"), ("TP", "num"), ("FP", "num"), ("FN", "num")]
        groups.append((title_of(o), 4))
    table_rows = []
    for k, row in enumerate(levels.get(orders[0], []) if orders else []):
        cells = [row["level"], H.num(row["tp"] + row["fn"])]
        for o in orders:
            r = levels[o][k]
            cells += [H.num(r["pq_th"], 2), H.num(r["tp"]), H.num(r["fp"]), H.num(r["fn"])]
        table_rows.append(cells)
    second = H.table(headers, table_rows, groups=groups, sortable=False)
    note = (f"On {measures.get('images', '?')} images, {measures.get('pairs', '?')} overlapping pairs of detections "
            "matched to ground-truth instances: the share each order stacks as the scene does, and PQ of the thing "
            "classes by how much of each instance others cover.")
    return H.section("order-measures", "Order measures", f"{first}<div style='height:10px'></div>{second}", note)


def per_class_section(results: Mapping[str, Mapping], orders: Sequence[str], pair: Sequence[str],
                      categories: Mapping[int, Mapping], gt_anns: Any, main: str) -> str:
    counts: dict = {}
    for ann in gt_anns:
        for s in ann["segments_info"]:
            if not s.get("iscrowd"):
                counts[int(s["category_id"])] = counts.get(int(s["category_id"]), 0) + 1
    headers = [("id", "num"), ("category", "text"), ("kind", "text"), ("GT segments", "num")]
    groups = [("", 4)]
    for o in orders:
        headers += [("PQ", "num"), ("SQ", "num"), ("RQ", "num"), ("TP", "num"), ("FP", "num"), ("FN", "num")]
        groups.append((title_of(o), 6))
    if len(pair) == 2:
        headers.append(("ΔPQ", "num"))
        groups.append(("Δ", 1))
    rows, attrs = [], []
    for cid in sorted(categories):
        per = {o: results[order_key(o)].get("per_class", {}).get(str(cid)) for o in orders}
        if not counts.get(cid) and not any(p and (p["tp"] + p["fp"] + p["fn"]) for p in per.values()):
            continue
        cat = categories[cid]
        row = [H.num(cid), H.Raw(f'<a class="cat" href="#browser" title="show the images with it">'
                                f'{H.esc(cat.get("name", cid))}</a>'),
               "thing" if cat.get("isthing", 1) else "stuff", H.num(counts.get(cid, 0))]
        for o in orders:
            p = per[o] or {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
            row += [H.pct(p["pq"]), H.pct(p["sq"]), H.pct(p["rq"]), H.num(p["tp"]), H.num(p["fp"]), H.num(p["fn"])]
        if len(pair) == 2:
            a, b = per[pair[0]], per[pair[1]]
            row.append(H.pct((b["pq"] if b else 0.0) - (a["pq"] if a else 0.0), signed=True))
        rows.append(row)
        attrs.append(f'data-cat="{cid}"')
    main_pq = 4 + 6 * orders.index(main)
    body = (f'<div class="scroll">' + H.table(headers, rows, groups=groups, table_id="class-table",
                                              signed_columns=[len(headers) - 1] if len(pair) == 2 else [],
                                              selftest_column=main_pq, row_attrs=attrs) + "</div>")
    return H.section("classes", "Per class", body, "Click a header to sort, a category to show the images "
                     "whose ground truth has it. PQ/SQ/RQ in %.")


def browser_section(records: Sequence[dict], shown: Sequence[dict], orders: Sequence[str], pair: Sequence[str],
                    main: str, has_pq: bool, has_diff: bool, count: int) -> str:
    options = []
    if has_pq:
        options += [("worst", f"PQ of the {title_of(main)}, worst first"), ("best", "PQ, best first")]
        if len(pair) == 2:
            options += [("gain", f"ΔPQ, {title_of(pair[1])} better first"),
                        ("loss", f"ΔPQ, {title_of(pair[0])} better first")]
    if has_diff:
        options.append(("differ", "share of pixels the orders disagree on"))
    options.append(("name", "name"))
    select_html = "".join(f'<option value="{v}">{H.esc(t)}</option>' for v, t in options)
    what = []
    if has_pq:
        what.append(f"the {count} worst and {count} best by PQ of the {title_of(main)}")
    if has_diff:
        what.append(f"the {count} where the orders differ most")
    if not has_pq:
        what.append(f"the first {count}")
    note = (f"{len(shown)} of {len(records)} images have pictures ({' and '.join(what)}); all are listed below. "
            "Hover a picture for the segment under the mouse; the disagreement view colours the pixels whose "
            "segment changes between the two orders.")
    cols = [("image", "text")]
    if has_pq:
        cols += [(f"PQ {H.esc(title_of(o))}", "num") for o in orders]
    if has_diff:
        cols.append(("pixels that differ %", "num"))
    all_table = H.table(cols, [], table_id="all-table")
    body = (f'<div class="controls"><label>sort by <select id="sort">{select_html}</select></label>'
            f'<span id="shown"></span><button type="button" id="clear" hidden>show all</button></div>'
            f'<div id="detail" hidden></div><div class="cards" id="cards"></div>'
            f'<details id="all-images" style="margin-top:14px"><summary>All {len(records)} images'
            f'</summary><div class="scroll">{all_table}</div></details>')
    return H.section("browser", "Images", body, note)


# --------------------------------------------------------------------------------------------
# the reports of the commands


def _read_optional(path: Path, what: str) -> Optional[Any]:
    return read_json(path, what) if path.is_file() else None


def evaluation_report(out_dir: str | Path, gt_json: str | Path, gt_dir: str | Path,
                      image_dir: Optional[str | Path] = None, *, images: int = DEFAULT_IMAGES,
                      title: Optional[str] = None, workers: Optional[int] = None) -> PredictionsReport:
    """The page of an ``oanet evaluate`` output folder (``results.json`` and one folder per order),
    against the ground truth ``gt_json``/``gt_dir`` it was evaluated on."""
    out_dir = Path(out_dir)
    results = read_json(out_dir / "results.json", "results")
    known = [o for o in (*ORDERS, ORACLE) if order_key(o) in results]
    orders = known + [k[: -len("_order")] for k in results if k.endswith("_order") and k[: -len("_order")] not in known]
    outputs = [OrderOutput(o, out_dir / order_key(o) / "panoptic.json", out_dir / order_key(o) / "panoptic")
               for o in orders]
    subtitle = (f"{H.esc(out_dir)}: predictions in {', '.join(H.esc(title_of(o)) for o in orders)} "
                f"against <code>{H.esc(gt_json)}</code>")
    return predictions_report(
        out_dir, outputs, gt_json=gt_json, gt_dir=gt_dir, image_dir=image_dir, results=results,
        measures=_read_optional(out_dir / "order_measures.json", "order measures"),
        differences=_read_optional(out_dir / "order_differences.json", "order differences"),
        scores=_read_optional(out_dir / "segment_scores.json", "segment scores"),
        images=images, title=title or "oanet evaluate", subtitle=subtitle, workers=workers)


def write_evaluation_report(out_dir: str | Path, gt_json: str | Path, gt_dir: str | Path,
                            image_dir: Optional[str | Path] = None, *, images: int = DEFAULT_IMAGES,
                            title: Optional[str] = None, workers: Optional[int] = None) -> Path:
    """``out_dir/report.html`` of an ``oanet evaluate`` folder (:func:`evaluation_report`); returns its path."""
    report = evaluation_report(out_dir, gt_json, gt_dir, image_dir, images=images, title=title, workers=workers)
    return report.write(Path(out_dir) / REPORT_NAME)


def write_merge_report(out_dir: str | Path, summary: Mapping, *, gt_json: Optional[str | Path] = None,
                       gt_dir: Optional[str | Path] = None, image_dir: Optional[str | Path] = None,
                       images: int = DEFAULT_IMAGES, workers: Optional[int] = None) -> Path:
    """``out_dir/report.html`` of an ``oanet merge`` folder, from its ``merge.json`` ``summary``: with a
    ground truth, PQ per image and class and the order measures (``summary["evaluation"]``); without, the
    images where the orders differ most."""
    out_dir = Path(out_dir)
    orders = list(summary["orders"])
    outputs = [OrderOutput(o, Path(summary["outputs"][o]), Path(summary["outputs"][o]).parent / "panoptic")
               for o in orders]
    evaluation = summary.get("evaluation") or {}
    measures = {k: v for k, v in evaluation.items() if k != "pq"} or None
    subtitle = (f"{summary.get('images', '?')} images merged from <code>{H.esc(summary.get('instances', '?'))}</code> "
                f"and <code>{H.esc(summary.get('semantic', '?'))}</code>, pasted in "
                f"{', '.join(H.esc(title_of(o)) for o in orders)}"
                + (f" against <code>{H.esc(gt_json)}</code>" if gt_json else " (no ground truth: no PQ)"))
    report = predictions_report(
        out_dir, outputs, gt_json=gt_json, gt_dir=gt_dir, image_dir=image_dir, measures=measures,
        scores=_read_optional(out_dir / "segment_scores.json", "segment scores"), images=images,
        title="oanet merge", subtitle=subtitle, workers=workers)
    return report.write(out_dir / REPORT_NAME)
