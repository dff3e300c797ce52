"""``oanet merge --order score`` against panopticapi's ``combine_semantic_and_instance_predictions.py``.

Same inputs, same thresholds (0.5, 0.5, 4096), same output (segments and pixels: tests/test_merge.py),
both writing their PNGs and JSON:

- ``coco``: the 16 real COCO val2017 images (640x480-ish, 133 categories) listed ``--repeat`` times under
  new image ids; the detections are their COCO instance annotations (non-crowd, about 7 per image) with
  random scores in [0.3, 1], the semantic prediction their GT stuff as COCO-stuff RLEs;
- ``results``: any detector results (``--instances``, ``--semantic`` as COCO-stuff RLEs, ``--images-json``),
  e.g. those ``benchmarks/srm_plugin.py`` writes.

panopticapi runs as shipped (a process per core); ``oanet merge --order score`` as the command runs it (a
process per core, the score order on the RLE runs: :mod:`oanet.merge.runs`), then both on one core. Times
are the best of ``--runs``: panopticapi's ``combine_predictions`` call, and oanet's ``read_inputs`` +
``run_merge`` (both read their JSONs inside the clock and write PNGs and JSON).

    python benchmarks/bench_merge.py coco [--repeat 20]
    python benchmarks/bench_merge.py results --instances R.json --semantic S.json --images-json F
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def coco_inputs(data: Path, repeat: int, out: Path) -> tuple[Path, Path, Path, Path]:
    from pycocotools import mask as mask_utils

    from oanet.data.coco_panoptic import PanopticSplit

    ann = data / "annotations"
    split = PanopticSplit(ann / "panoptic_val2017.json", ann / "panoptic_val2017", data / "val2017",
                          instances_json=ann / "instances_val2017.json")
    space = split.label_space()
    rng = np.random.default_rng(0)
    images, inst, sem = [], [], []
    raw = json.loads((ann / "instances_val2017.json").read_text())
    by_image: dict = {}
    for a in raw["annotations"]:
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    for r in range(repeat):
        for info in split.images:
            new_id = r * 10 ** 7 + int(info.id)
            images.append({"id": new_id, "file_name": f"{new_id:012d}.jpg", "height": info.height, "width": info.width})
            masks, cats, crowd = split.load_instance_masks(info.id)
            rles = mask_utils.encode(np.asfortranarray(masks[~crowd].transpose(1, 2, 0)))
            for rle, c in zip(rles, cats[~crowd]):
                inst.append({"image_id": new_id, "category_id": int(c), "score": float(rng.uniform(0.3, 1.0)),
                             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
            index = split.load_index_map(info.id)
            a = split.annotation(info.id)
            stuff = np.where(index >= 0, space.stuff_index(a.category_ids)[np.maximum(index, 0)], -1)
            for s in np.unique(stuff[stuff >= 0]):
                rle = mask_utils.encode(np.asfortranarray((stuff == s).astype(np.uint8)))
                sem.append({"image_id": new_id, "category_id": int(space.stuff_ids[s]),
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    cats = json.loads((ann / "panoptic_coco_categories.json").read_text())  # with colours, as panopticapi needs
    paths = out / "images.json", out / "inst.json", out / "sem.json", out / "categories.json"
    paths[0].write_text(json.dumps({"images": images, "categories": cats}))
    paths[1].write_text(json.dumps(inst))
    paths[2].write_text(json.dumps(sem))
    paths[3].write_text(json.dumps(cats))
    return paths


def time_panopticapi(images: Path, inst: Path, sem: Path, cats: Path, out: Path, cores: int) -> float:
    import panopticapi.combine_semantic_and_instance_predictions as combine

    if cores == 1:
        def single(img_id2img, inst_by_image, sem_by_image, folder, overlap_thr, stuff_area_limit, categories):
            return combine.combine_to_panoptic_single_core(0, list(img_id2img), img_id2img, inst_by_image,
                                                           sem_by_image, folder, overlap_thr, stuff_area_limit,
                                                           categories)
        combine.combine_to_panoptic_multi_core, saved = single, combine.combine_to_panoptic_multi_core
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        combine.combine_predictions(str(sem), str(inst), str(images), str(cats), str(out), str(out) + ".json",
                                    0.5, 0.5, 4096)
    seconds = time.perf_counter() - start
    if cores == 1:
        combine.combine_to_panoptic_multi_core = saved
    return seconds


def time_oanet(images: Path, inst: Path, sem: Path, cats: Path, out: Path, workers: int) -> float:
    from oanet.merge.inputs import read_inputs
    from oanet.merge.settings import MergeSettings
    from oanet.merge.run import run_merge

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    inputs = read_inputs(inst, sem, images, cats)
    run_merge(inputs, out, ["score"], None, MergeSettings(0.5, 0.5, 4096), workers=workers, progress=False,
              log=lambda _: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=("coco", "results"))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "coco_panoptic_val16")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--instances", type=Path)
    parser.add_argument("--semantic", type=Path)
    parser.add_argument("--images-json", type=Path)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_merge_"))
    if args.case == "coco":
        images, inst, sem, cats = coco_inputs(args.data, args.repeat, work)
    else:
        images, inst, sem = args.images_json, args.instances, args.semantic
        cats = work / "categories.json"
        cats.write_text(json.dumps(json.loads(images.read_text())["categories"]))
    n = len(json.loads(images.read_text())["images"])
    cores = os.cpu_count() or 1
    rows = {}
    for name, fn, arg in (("panopticapi, a process per core", time_panopticapi, cores),
                          ("oanet merge, a process per core", time_oanet, cores),
                          ("panopticapi, 1 process", time_panopticapi, 1),
                          ("oanet merge, 1 process", time_oanet, 1)):
        rows[name] = min(fn(images, inst, sem, cats, work / "out", arg) for _ in range(args.runs))
    print(f"{args.case}: {n} images, {len(json.loads(inst.read_text()))} instances, {cores} cores, load {os.getloadavg()[0]:.2f}")
    for name, seconds in rows.items():
        print(f"  {name:34} {seconds:7.2f} s  ({1000 * seconds / n:.1f} ms/image)")
    print(f"  speed-up, all cores: {rows['panopticapi, a process per core'] / rows['oanet merge, a process per core']:.1f}x; "
          f"one core: {rows['panopticapi, 1 process'] / rows['oanet merge, 1 process']:.1f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
