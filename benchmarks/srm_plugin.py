"""The SRM as a plug-in for a plain Mask R-CNN, on the synthetic occlusion benchmark (issue 17).

1. Train torchvision's ``MaskRCNN`` (not OANet: the light CPU preset's ResNet-18 FPN, RPN and RoI heads,
   built as in ``bench_overhead.build_maskrcnn``) on the benchmark's training split, with its amodal
   instance masks, for the demo's schedule.
2. Run it on the val split (and on the training split, for an SRM trained on its own outputs) and write
   COCO instance results; take the stuff prediction from the demo's OANet stuff branch (label PNGs).
3. Train SRMs with ``oanet srm train``: from annotations alone, and from the Mask R-CNN's predictions.
4. ``oanet merge`` the val results by score, by each SRM and by OANet's jointly trained SRM (its
   checkpoint), each evaluated against the GT (PQ, pairwise order accuracy, PQ_th by occlusion).
5. Time panopticapi's combine script against ``oanet merge --order score`` on the same inputs.

    python benchmarks/srm_plugin.py --demo oanet-demo --out bench-srm-plugin

``--demo`` is an ``oanet demo`` folder (its data and ``train/model_final.pth``). Everything lands in
``--out`` (``results.json`` and the table printed at the end); finished steps are not redone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def oanet(*args: str, log: Path) -> float:
    """Run the oanet CLI in a fresh process (as a user would); returns its wall time."""
    start = time.perf_counter()
    with open(log, "a") as f:
        subprocess.run([sys.executable, "-m", "oanet.cli", *args], check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def train_maskrcnn(demo: Path, out: Path, iterations: int, batch: int, seed: int = 0) -> Path:
    """torchvision MaskRCNN on the benchmark's train split (amodal instance masks), SGD as the demo."""
    sys.path.insert(0, str(HERE))
    from bench_overhead import build_maskrcnn

    from oanet.config import load_config
    from oanet.data.coco_panoptic import PanopticSplit
    from oanet.data.dataset import PanopticDataset

    path = out / "maskrcnn.pth"
    if path.is_file():
        return path
    cfg = load_config("synthetic_cpu")
    ann = demo / "data" / "annotations"
    split = PanopticSplit(ann / "panoptic_train.json", ann / "panoptic_train", demo / "data" / "images" / "train",
                          instances_json=ann / "instances_train.json")
    dataset = PanopticDataset(split, instance_source="instances", stuff_classes="all", hflip_prob=0.5, seed=seed)
    space = split.label_space()
    model_cfg = dataclasses.replace(cfg.model, num_thing_classes=space.num_things, num_stuff_classes=space.num_stuff)
    torch.manual_seed(seed)
    model = build_maskrcnn(model_cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.solver.base_lr, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for it in range(iterations):
        lr = cfg.solver.base_lr * (0.1 + 0.9 * it / 100 if it < 100 else 0.1 ** sum(it >= s for s in cfg.solver.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, targets = [], []
        for k in rng.integers(len(dataset), size=batch):
            image, target = dataset.get(int(k), epoch=it)
            images.append(image)
            targets.append({"boxes": target["boxes"], "labels": target["labels"] + 1, "masks": target["masks"]})
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 50 == 0 or it == iterations - 1:
            print(f"  maskrcnn it {it}: loss {float(loss.detach()):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    torch.save({"model": model.state_dict(), "num_things": space.num_things, "seconds": time.perf_counter() - start},
               path)
    return path


def maskrcnn_results(demo: Path, out: Path, split_name: str, limit: int = 0) -> Path:
    """COCO instance results (RLE) of the trained Mask R-CNN on a split's images."""
    sys.path.insert(0, str(HERE))
    from bench_overhead import build_maskrcnn
    from pycocotools import mask as mask_utils

    from oanet.config import load_config
    from oanet.data.dataset import image_to_tensor
    from oanet.data.images import load_rgb_image
    from oanet.data.panoptic_json import read_images

    path = out / f"maskrcnn_{split_name}.json"
    if path.is_file():
        return path
    state = torch.load(out / "maskrcnn.pth", weights_only=True)
    cfg = load_config("synthetic_cpu")
    ann = demo / "data" / "annotations"
    space_json = json.loads((ann / f"panoptic_{split_name}.json").read_text())
    thing_ids = sorted(c["id"] for c in space_json["categories"] if c["isthing"])
    model_cfg = dataclasses.replace(cfg.model, num_thing_classes=state["num_things"], num_stuff_classes=1)
    model = build_maskrcnn(model_cfg)
    model.load_state_dict(state["model"])
    model.eval()
    results = []
    with torch.inference_mode():
        for info in read_images(ann / f"panoptic_{split_name}.json")[:limit or None]:
            image = image_to_tensor(load_rgb_image(demo / "data" / "images" / split_name / info.file_name))
            det = model([image])[0]
            masks = (det["masks"][:, 0] > 0.5).numpy().astype(np.uint8)
            rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
            for rle, label, score in zip(rles, det["labels"].tolist(), det["scores"].tolist()):
                results.append({"image_id": info.id, "category_id": thing_ids[label - 1], "score": round(score, 5),
                                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    path.write_text(json.dumps(results))
    return path


def oanet_stuff(demo: Path, out: Path) -> Path:
    """Semantic label PNGs (stuff category ids, 0 elsewhere) from the demo OANet's stuff branch on val."""
    from PIL import Image

    from oanet.data.dataset import image_to_tensor
    from oanet.data.images import load_rgb_image
    from oanet.data.panoptic_json import read_images
    from oanet.model.checkpoint import load_model_from_checkpoint

    folder = out / "oanet_stuff_val"
    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    model, cfg, space = load_model_from_checkpoint(demo / "train" / "model_final.pth")
    channel_ids = space.channel_category_ids(cfg.model.stuff_head.classes)
    is_stuff = np.isin(channel_ids, space.stuff_ids)
    lookup = np.where(is_stuff, channel_ids, 0).astype(np.uint8)
    ann = demo / "data" / "annotations"
    with torch.inference_mode():
        for info in read_images(ann / "panoptic_val.json"):
            image = image_to_tensor(load_rgb_image(demo / "data" / "images" / "val" / info.file_name))
            labels = model([image])[0]["sem_seg_labels"].numpy()
            Image.fromarray(lookup[labels]).save(folder / Path(info.file_name).with_suffix(".png").name)
    (folder / "done").write_text("")
    return folder


def stuff_rle_json(demo: Path, folder: Path, out: Path) -> Path:
    """The same stuff prediction as COCO-stuff results (one RLE per category per image), for panopticapi."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    from oanet.data.panoptic_json import read_images

    path = out / "oanet_stuff_val.json"
    if path.is_file():
        return path
    rows = []
    for info in read_images(demo / "data" / "annotations" / "panoptic_val.json"):
        labels = np.asarray(Image.open(folder / Path(info.file_name).with_suffix(".png").name))
        for c in np.unique(labels[labels > 0]):
            rle = mask_utils.encode(np.asfortranarray((labels == c).astype(np.uint8)))
            rows.append({"image_id": info.id, "category_id": int(c),
                         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    path.write_text(json.dumps(rows))
    return path


def merge_and_evaluate(demo: Path, out: Path, name: str, results: Path, stuff: Path, srm: Path | None) -> dict:
    ann = demo / "data" / "annotations"
    target = out / f"merge_{name}"
    if not (target / "merge.json").is_file():
        args = ["merge", "--instances", str(results), "--semantic", str(stuff), "--images-json",
                str(ann / "panoptic_val.json"), "--out", str(target), "--gt-json", str(ann / "panoptic_val.json"),
                "--gt-dir", str(ann / "panoptic_val"), "--gt-instances", str(ann / "instances_val.json"), "--no-progress"]
        args += ["--order", "both", "--srm", str(srm)] if srm else ["--order", "score"]
        args += ["--report-images", "0"]
        oanet(*args, log=out / "log.txt")
    return json.loads((target / "merge.json").read_text())["evaluation"]


def time_merges(demo: Path, out: Path, results: Path, stuff_json: Path) -> dict:
    """panopticapi's combine script vs ``oanet merge --order score``, same inputs, both on all cores."""
    from panopticapi.combine_semantic_and_instance_predictions import combine_predictions

    ann = demo / "data" / "annotations"
    cats = out / "categories.json"
    cats.write_text(json.dumps(json.loads((ann / "panoptic_val.json").read_text())["categories"]))
    timings = {}
    for run in range(2):
        start = time.perf_counter()
        combine_predictions(str(stuff_json), str(results), str(ann / "panoptic_val.json"), str(cats),
                            str(out / f"panopticapi_{run}"), str(out / f"panopticapi_{run}.json"), 0.5, 0.5, 4096)
        timings.setdefault("panopticapi", []).append(time.perf_counter() - start)
        start = time.perf_counter()
        oanet("merge", "--instances", str(results), "--semantic", str(stuff_json), "--images-json",
              str(ann / "panoptic_val.json"), "--out", str(out / f"speed_{run}"), "--order", "score", "--no-progress",
              "--report-images", "0", log=out / "log.txt")
        timings.setdefault("oanet_merge_process", []).append(time.perf_counter() - start)
        summary = json.loads((out / f"speed_{run}" / "merge.json").read_text())
        timings.setdefault("oanet_merge", []).append(summary["seconds"])
    return {k: min(v) for k, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--srm-iterations", type=int, default=2000)
    parser.add_argument("--train-predictions", type=int, default=0,
                        help="predict this many training images for the SRM on predictions (0 = all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OANET_THREADS", "2")))
    demo, out = args.demo, args.out
    ann = demo / "data" / "annotations"
    record = {}
    t = time.perf_counter()
    train_maskrcnn(demo, out, args.iterations, args.batch)
    record["maskrcnn_train_s"] = torch.load(out / "maskrcnn.pth", weights_only=True)["seconds"]
    val = maskrcnn_results(demo, out, "val")
    train_results = maskrcnn_results(demo, out, "train", args.train_predictions)
    stuff = oanet_stuff(demo, out)
    srm_args = ["srm", "train", "--panoptic-json", str(ann / "panoptic_train.json"), "--panoptic-dir",
                str(ann / "panoptic_train"), "--instances-json", str(ann / "instances_train.json"), "--short-side", "160",
                "--max-size", "160", "--iterations", str(args.srm_iterations), "--no-progress"]
    variants = (("annotations", ["--perturbation", "light"]), ("annotations_none", ["--perturbation", "none"]),
                ("annotations_heavy", ["--perturbation", "heavy"]), ("predictions", ["--predictions", str(train_results)]))
    for name, extra in variants:
        path = out / f"srm_{name}.pth"
        if not path.is_file():
            record[f"srm_{name}_train_s"] = oanet(*srm_args, *extra, "--out", str(path), log=out / "log.txt")
    evaluations = {"score": merge_and_evaluate(demo, out, "score", val, stuff, None)}
    srms = [(f"srm_{name}", out / f"srm_{name}.pth") for name, _ in variants]
    for name, srm in (*srms, ("srm_oanet_joint", demo / "train" / "model_final.pth")):
        evaluations[name] = merge_and_evaluate(demo, out, name, val, stuff, srm)
    record["evaluations"] = evaluations
    record["speed"] = time_merges(demo, out, val, stuff_rle_json(demo, stuff, out))
    record["total_s"] = time.perf_counter() - t
    (out / "results.json").write_text(json.dumps(record, indent=2))
    print_table(record)


def print_table(record: dict) -> None:
    ev = record["evaluations"]
    rows = [("score order (heuristic)", ev["score"], "score")]
    rows += [(f"SRM: {name[4:].replace('_', ' ')}", ev[name], "srm") for name in ev if name != "score"]
    print("| order | PQ | PQ_th | PQ_st | pairwise order acc. % | " +
          " | ".join(f"PQ_th {r['level']}" for r in ev["score"]["pq_th_by_occlusion"]["score"]) + " |")
    for title, e, order in rows:
        pq = e["pq"][order]
        levels = " | ".join(f"{r['pq_th']:.2f}" if r["pq_th"] is not None else "-" for r in e["pq_th_by_occlusion"][order])
        print(f"| {title} | {100 * pq['All']['pq']:.2f} | {100 * pq['Things']['pq']:.2f} | {100 * pq['Stuff']['pq']:.2f} | "
              f"{e['pairwise_order_accuracy'][order]} | {levels} |")
    s = record["speed"]
    print(f"merge speed (300 val images): panopticapi {s['panopticapi']:.2f} s, oanet merge {s['oanet_merge']:.2f} s "
          f"({s['panopticapi'] / s['oanet_merge']:.1f}x; whole process incl. torch import {s['oanet_merge_process']:.2f} s)")


if __name__ == "__main__":
    main()
