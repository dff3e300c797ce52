"""The SRM plug-in on the 16 real COCO val2017 images, each image ranked by an SRM that never saw it.

4 folds of 4 images: an SRM is trained with ``oanet.srm.training`` on the other 12 images' annotations
alone (their COCO instance masks, perturbed), then ranks the held-out images' detections. No detector
runs offline here, so the detections are the COCO instance masks of the held-out images themselves, with
two kinds of score:

- ``random``: scores that carry no depth cue (the score order is then a coin toss);
- ``visible``: 0.5 + 0.5 x the share of the instance that is visible in the panoptic GT, plus noise:
  the best case for the score order (a detector whose confidence follows visibility).

Stuff comes from the GT (PQ_th does not depend on it: things are pasted first). Reports, over the 16
images: PQ_th of both orders, the pairwise order accuracy, and the SRM's training cost per iteration
extrapolated to COCO train2017.

    python benchmarks/srm_plugin_coco16.py [--data ../shared/data/coco_panoptic_val16] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def fold_split(data: dict, instances: dict, image_ids: set, out: Path, name: str) -> tuple[Path, Path]:
    """The panoptic and instances JSONs restricted to ``image_ids``."""
    pan = dict(data, images=[i for i in data["images"] if i["id"] in image_ids],
               annotations=[a for a in data["annotations"] if a["image_id"] in image_ids])
    ins = dict(instances, images=[i for i in instances["images"] if i["id"] in image_ids],
               annotations=[a for a in instances["annotations"] if a["image_id"] in image_ids])
    (out / f"{name}_panoptic.json").write_text(json.dumps(pan))
    (out / f"{name}_instances.json").write_text(json.dumps(ins))
    return out / f"{name}_panoptic.json", out / f"{name}_instances.json"


def detections(split, image_id, scoring: str, rng) -> tuple:
    """The image's non-crowd COCO instance masks as detections, scored as ``scoring`` says."""
    masks, cats, crowd = split.load_instance_masks(image_id)
    masks, cats = masks[~crowd].astype(bool), cats[~crowd]
    index = split.load_index_map(image_id)
    ann = split.annotation(image_id)
    visible = np.zeros(len(masks))
    for k in range(len(masks)):  # a benchmark, not a hot path: the share of each mask its segment shows
        same = np.flatnonzero(ann.category_ids == cats[k])
        if len(same) and masks[k].any():
            owner = index[masks[k]]
            visible[k] = max(((owner == s).sum() for s in same), default=0) / masks[k].sum()
    if scoring == "random":
        scores = rng.uniform(0.5, 1.0, len(masks))
    else:
        scores = np.clip(0.5 + 0.5 * visible + rng.normal(0, 0.05, len(masks)), 0.5, 1.0)
    return masks, cats, scores


def main() -> None:
    from oanet.data.coco_panoptic import PanopticSplit, PanopticWriter
    from oanet.evaluation.order_measures import OrderMeasures, format_order_measures
    from oanet.evaluation.pq import pq_compute
    from oanet.merge import Instances, MergeSettings
    from oanet.merge.merge import fuse_selected, pasting_order, selected_detections
    from oanet.result import build_result, category_table
    from oanet.srm.training import SRMTrainConfig, train_spatial_ranker
    from oanet.srm import SpatialRanker

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "coco_panoptic_val16")
    parser.add_argument("--out", type=Path, default=Path("bench-srm-coco16"))
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    ann = args.data / "annotations"
    args.out.mkdir(parents=True, exist_ok=True)
    data = json.loads((ann / "panoptic_val2017.json").read_text())
    instances = json.loads((ann / "instances_val2017.json").read_text())
    ids = sorted(i["id"] for i in data["images"])
    folds = [ids[k::4] for k in range(4)]
    gt = PanopticSplit(ann / "panoptic_val2017.json", ann / "panoptic_val2017", args.data / "val2017",
                       instances_json=ann / "instances_val2017.json")
    space = gt.label_space()
    rankers, train_seconds = [], []
    for k, held_out in enumerate(folds):
        pan, ins = fold_split(data, instances, set(ids) - set(held_out), args.out, f"fold{k}")
        split = PanopticSplit(pan, ann / "panoptic_val2017", args.data / "val2017", instances_json=ins)
        cfg = SRMTrainConfig(iterations=args.iterations, checkpoint_period=10 ** 9)
        summary = train_spatial_ranker(split, args.out / f"srm_fold{k}.pth", cfg, progress=False)
        train_seconds.append(summary["seconds"] / args.iterations)
        rankers.append(SpatialRanker.from_file(args.out / f"srm_fold{k}.pth"))
    report = {"seconds_per_iteration": float(np.mean(train_seconds)), "iterations": args.iterations,
              "batch_size": SRMTrainConfig().batch_size}
    categories = category_table(space)
    settings = MergeSettings(0.5, 0.5, 4096)
    for scoring in ("random", "visible"):
        rng = np.random.default_rng(0)
        measures = OrderMeasures(ann / "panoptic_val2017.json", ann / "panoptic_val2017", ann / "instances_val2017.json",
                                 ("score", "srm"))
        writers = {o: PanopticWriter(args.out / scoring / o / "panoptic.json", args.out / scoring / o / "panoptic", space)
                   for o in ("score", "srm")}
        for k, held_out in enumerate(folds):
            for image_id in held_out:
                masks, cats, scores = detections(gt, image_id, scoring, rng)
                index = gt.load_index_map(image_id)
                a = gt.annotation(image_id)
                semantic = np.where(index >= 0, space.stuff_index(a.category_ids)[np.maximum(index, 0)], -1)
                det = selected_detections(Instances(masks, cats, scores), space, settings.score_thresh)
                ranking = rankers[k].rank_channels(det["masks"], det["labels"])
                fused = fuse_selected(det, semantic, ("score", "srm"), ranking, space, settings)
                info = gt.image_info(image_id)
                positions = {}
                for o in ("score", "srm"):
                    order = pasting_order(det, o, ranking).numpy()
                    positions[o] = np.empty(len(order), dtype=np.int64)
                    positions[o][order] = np.arange(len(order))
                    result = build_result(fused[o][0].numpy(), fused[o][1], categories, o, image_id, info.file_name)
                    writers[o].add(info, result.panoptic, result.segments)
                measures.add_image(image_id, det["masks"].numpy(), space.thing_ids[det["labels"].numpy()], positions,
                                   {o: (fused[o][0].numpy(), fused[o][1]) for o in ("score", "srm")})
        pq = {}
        for o, writer in writers.items():
            writer.close()
            result = pq_compute(ann / "panoptic_val2017.json", ann / "panoptic_val2017", writer.json_path,
                                writer.png_dir, progress=False)
            pq[o] = {g: result.summary(t) for g, t in (("All", None), ("Things", True), ("Stuff", False))}
        report[scoring] = {"pq": pq, **measures.summary()}
        print(f"\nscores: {scoring}")
        for o in ("score", "srm"):
            print(f"  {o:5} PQ {100 * pq[o]['All']['pq']:.2f}  PQ_th {100 * pq[o]['Things']['pq']:.2f}")
        print(format_order_measures(measures.summary(), ("score", "srm")))
    per_it = report["seconds_per_iteration"]
    # COCO train2017: 118,287 images; one pass at 8 images per iteration.
    report["coco_train_epoch_hours"] = per_it * 118287 / 8 / 3600
    print(f"\nSRM training: {per_it:.3f} s per iteration of {report['batch_size']} COCO images (80 thing classes, gcn7, "
          f"800 px / 4); one pass over COCO train2017 = {report['coco_train_epoch_hours']:.1f} h on this machine")
    (args.out / "results.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
