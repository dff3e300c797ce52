"""The deploy path (``oanet export`` + ``oanet.runtime.OnnxPredictor``) against eager PyTorch.

Three measurements for BENCHMARKS.md ("Deploy without PyTorch"); each prints a table and, with
``--out``, writes its figures as JSON. The exported file is written to ``--work`` (reused when present).

(a) parity: PQ of both paths in both orders on a COCO panoptic split (default: the checkpoint's
    ``data.val``, e.g. the synthetic val split of the demo preset), per-image max |box| / |score|
    differences, detection-count mismatches, images whose panoptic maps are identical::

        python benchmarks/bench_onnx.py parity --checkpoint output/synthetic_cpu/model_final.pth

(b) speed: per-image time of onnxruntime (CPU) and eager PyTorch on the same images, each in its own
    fresh process after a warm-up, with the share spent outside the network (numpy paste + fusion
    for ONNX; fusion for PyTorch, whose paste is inside its forward pass)::

        python benchmarks/bench_onnx.py speed --checkpoint output/synthetic_cpu/model_final.pth \\
            --images datasets/synthetic/images/val --num-images 100
        python benchmarks/bench_onnx.py speed --preset r50 --size 512 --num-images 20

    ``--preset r50``: ResNet-50-FPN, 80 things + 53 stuff, input ``--size`` square, random init with
    the box classifier's weights x20 so that detections_per_img (100) confident detections reach the
    masks, the SRM and fusion (as benchmarks/bench_model.py), and random-noise images. All 100 are
    selected, the worst case for the ONNX graph, whose mask head runs on the selected detections only
    (PyTorch's runs on all of them); a trained model selects fewer.

(c) startup: a fresh interpreter each time: import, load the model, first image (median of runs)::

        python benchmarks/bench_onnx.py startup --checkpoint output/synthetic_cpu/model_final.pth

``--threads`` (default: all cores) is given to both torch and onnxruntime. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ORDERS = ("score", "srm")


# --------------------------------------------------------------------------------------------
# models and images


def r50_checkpoint(work: Path, size: int, logit_scale: float) -> Path:
    """A random R50 model as an oanet checkpoint (what the PyTorch worker loads and we export)."""
    import torch

    from oanet.config import Config, ModelConfig
    from oanet.data.labels import LabelSpace, parse_categories
    from oanet.model.checkpoint import atomic_save, final_model_state
    from oanet.model.oanet import OANet

    path = work / f"r50_{size}.pth"
    if path.is_file():
        return path
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(num_thing_classes=80, num_stuff_classes=53, min_size=(size,), max_size=size),
                 device="cpu")
    model = OANet.from_config(cfg.model).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(logit_scale)
    raw = [{"id": i, "name": f"thing{i}", "isthing": 1} for i in range(1, 81)]
    raw += [{"id": 100 + j, "name": f"stuff{j}", "isthing": 0} for j in range(53)]
    space = LabelSpace(parse_categories(raw, "r50 preset"))
    atomic_save(final_model_state(model, cfg, space, iteration=0), path)
    return path


def exported(checkpoint: Path, work: Path, onnx_path: str | None) -> Path:
    if onnx_path:
        return Path(onnx_path)
    path = work / (checkpoint.stem + ".onnx")
    if not path.is_file():
        from oanet.model.checkpoint import load_model_from_checkpoint
        from oanet.export.exporter import export_onnx

        t0 = time.perf_counter()
        model, cfg, space = load_model_from_checkpoint(checkpoint, device="cpu")
        export_onnx(model, cfg, space, path)
        print(f"exported {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def image_set(args, work: Path, size: int) -> Path:
    """The images both workers time, saved once as an .npz (list of HxWx3 uint8)."""
    from oanet.data.images import list_image_files, load_rgb_image

    path = work / "images.npz"
    if args.images:
        rgbs = [load_rgb_image(p) for p in list_image_files(args.images)[: args.num_images]]
    else:
        rng = np.random.default_rng(0)
        rgbs = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.num_images)]
    np.savez(path, *rgbs)
    return path


# --------------------------------------------------------------------------------------------
# (a) parity


def _split(args, cfg):
    from oanet.config import SplitConfig
    from oanet.data.coco_panoptic import PanopticSplit

    if args.data_json:
        return PanopticSplit(args.data_json, args.data_png_dir, args.data_image_dir)
    return PanopticSplit.from_config(cfg.data.val if cfg.data.val.panoptic_json else SplitConfig(), "data.val")


def parity(args, work: Path) -> dict:
    import torch

    from oanet.data.coco_panoptic import PanopticWriter
    from oanet.fileio import read_json
    from oanet.data.images import load_rgb_image, to_float_chw
    from oanet.inference.torch_predictor import Predictor
    from oanet.evaluation.pq import pq_compute
    from oanet.model.fusion import fuse
    from oanet.runtime import OnnxPredictor

    checkpoint = Path(args.checkpoint)
    torch.set_num_threads(args.threads)
    eager = Predictor.from_checkpoint(checkpoint, device="cpu", order="both")
    onnx = OnnxPredictor(exported(checkpoint, work, args.onnx), order="both", threads=args.threads)
    split = _split(args, eager.cfg)
    images = split.images[: args.max_images] if args.max_images else split.images
    writers = {(b, o): PanopticWriter(work / f"{b}_{o}.json", work / f"{b}_{o}", split.categories)
               for b in ("torch", "onnx") for o in ORDERS}
    rows, identical = [], {o: 0 for o in ORDERS}
    for info in images:
        rgb = load_rgb_image(split.image_path(info.id))
        raw = onnx.run(rgb)
        with torch.inference_mode():
            output = eager.model([torch.from_numpy(to_float_chw(rgb))], score_thresh=eager.score_thresh)[0]
            fused_torch = {o: (ids.numpy(), segs) for o, (ids, segs) in
                           fuse(output, eager.label_space, eager.stuff_classes, eager.fusion, ORDERS).items()}
        fused_onnx = onnx.fuse_outputs(raw, ORDERS)
        same_n = len(raw["scores"]) == len(output["scores"])
        rows.append({
            "image_id": info.id, "detections": len(output["scores"]), "count_mismatch": not same_n,
            "selected": int(output["selected"].sum()),
            "box_diff": float(np.abs(raw["boxes"] - output["boxes"].numpy()).max(initial=0)) if same_n else None,
            "score_diff": float(np.abs(raw["scores"] - output["scores"].numpy()).max(initial=0)) if same_n else None,
        })
        for o in ORDERS:
            writers["torch", o].add(info, *fused_torch[o])
            writers["onnx", o].add(info, *fused_onnx[o])
            identical[o] += bool(np.array_equal(fused_torch[o][0], fused_onnx[o][0]))
    for writer in writers.values():
        writer.close()
    gt = read_json(split.panoptic_json)
    ids = {info.id for info in images}
    gt = {**gt, "images": [i for i in gt["images"] if i["id"] in ids],
          "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    pq = {f"{b}_{o}": pq_compute(gt, split.panoptic_dir, work / f"{b}_{o}.json", work / f"{b}_{o}", workers=0,
                                 progress=False).to_dict() for b in ("torch", "onnx") for o in ORDERS}
    diffs = [r for r in rows if not r["count_mismatch"]]
    return {
        "images": len(rows), "threads": args.threads,
        "pq": {k: {g: v[g] for g in ("All", "Things", "Stuff")} for k, v in pq.items()},
        "pq_diff_onnx_minus_torch": {o: {g: 100 * (pq[f"onnx_{o}"][g]["pq"] - pq[f"torch_{o}"][g]["pq"])
                                         for g in ("All", "Things", "Stuff")} for o in ORDERS},
        "max_box_diff": max((r["box_diff"] for r in diffs), default=0.0),
        "max_score_diff": max((r["score_diff"] for r in diffs), default=0.0),
        "images_with_count_mismatch": len(rows) - len(diffs),
        "images_without_detections": sum(r["detections"] == 0 for r in rows),
        "images_without_selected": sum(r["selected"] == 0 for r in rows),
        "identical_panoptic_maps": identical,
        "per_image": rows,
    }


def print_parity(report: dict) -> None:
    print(f"{report['images']} images, {report['threads']} threads")
    print(f"{'':14} {'PQ':>7} {'PQ_th':>7} {'PQ_st':>7}")
    for key, groups in report["pq"].items():
        print(f"{key:14} " + " ".join(f"{100 * groups[g]['pq']:7.2f}" for g in ("All", "Things", "Stuff")))
    for order, diff in report["pq_diff_onnx_minus_torch"].items():
        print(f"onnx - torch, {order} order: PQ {diff['All']:+.3f}, PQ_th {diff['Things']:+.3f}, PQ_st {diff['Stuff']:+.3f}")
    print(f"max |box diff| {report['max_box_diff']:.3g} px, max |score diff| {report['max_score_diff']:.3g}, "
          f"count mismatches {report['images_with_count_mismatch']}, images without detections "
          f"{report['images_without_detections']} (without selected {report['images_without_selected']}), "
          f"identical maps {report['identical_panoptic_maps']}")


# --------------------------------------------------------------------------------------------
# (b) speed: one worker process per backend


def worker(args) -> None:
    """Time one backend on the saved images; prints one JSON line."""
    data = np.load(args.images_npz)
    rgbs = [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
    orders = ORDERS if args.order == "both" else (args.order,)
    if args.backend == "onnx":
        from oanet.runtime import OnnxPredictor

        predictor = OnnxPredictor(args.model, threads=args.threads)

        def network(rgb):
            return predictor.run(rgb)

        def post(raw):
            predictor.fuse_outputs(raw, orders)
            return int(raw["selected"].sum())
    else:
        import torch

        from oanet.data.images import to_float_chw
        from oanet.inference.torch_predictor import Predictor
        from oanet.model.fusion import fuse

        torch.set_num_threads(args.threads)
        predictor = Predictor.from_checkpoint(args.model, device="cpu")

        def network(rgb):  # what Predictor._fuse_batch does before fusion
            with torch.inference_mode():
                return predictor.model([torch.from_numpy(to_float_chw(rgb))], score_thresh=predictor.score_thresh)[0]

        def post(output):
            with torch.inference_mode():
                fused = fuse(output, predictor.label_space, predictor.stuff_classes, predictor.fusion, orders)
                [ids.numpy() for ids, _ in fused.values()]
            return int(output["selected"].sum())
    for rgb in rgbs[: args.warmup]:
        post(network(rgb))
    times = []
    for rgb in rgbs:
        t0 = time.perf_counter()
        out = network(rgb)
        t1 = time.perf_counter()
        selected = post(out)
        times.append((t1 - t0, time.perf_counter() - t1, selected))
    print(json.dumps({"backend": args.backend, "times": times}))


def run_worker(backend: str, model: Path, images: Path, args) -> dict:
    cmd = [sys.executable, __file__, "_worker", "--backend", backend, "--model", str(model), "--images-npz", str(images),
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--order", args.order]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    times = np.array(json.loads(done.stdout.strip().splitlines()[-1])["times"])
    total = times[:, 0] + times[:, 1]
    return {"median_ms": 1000 * float(np.median(total)), "mean_ms": 1000 * float(total.mean()),
            "network_median_ms": 1000 * float(np.median(times[:, 0])),
            "post_share": float(times[:, 1].sum() / total.sum()), "selected_mean": float(times[:, 2].mean()),
            "images": len(times)}


def speed(args, work: Path) -> dict:
    if args.preset == "r50":
        checkpoint = r50_checkpoint(work, args.size, args.logit_scale)
        size = args.size
    else:
        checkpoint = Path(args.checkpoint)
        size = args.size
    onnx_path = exported(checkpoint, work, args.onnx)
    images = image_set(args, work, size)
    report = {"model": str(checkpoint), "threads": args.threads, "warmup": args.warmup, "order": args.order,
              "load_average": os.getloadavg()}
    for backend, model in (("torch", checkpoint), ("onnx", onnx_path)):
        report[backend] = run_worker(backend, model, images, args)
    report["speedup_median"] = report["torch"]["median_ms"] / report["onnx"]["median_ms"]
    report["speedup_mean"] = report["torch"]["mean_ms"] / report["onnx"]["mean_ms"]
    report["load_average_after"] = os.getloadavg()
    return report


def print_speed(report: dict) -> None:
    print(f"{report['model']}: {report['threads']} threads, order {report['order']}, load {report['load_average']}")
    print(f"{'':6} {'median ms':>10} {'mean ms':>9} {'network ms':>11} {'outside net':>12} {'selected':>9}")
    for backend in ("torch", "onnx"):
        r = report[backend]
        print(f"{backend:6} {r['median_ms']:10.1f} {r['mean_ms']:9.1f} {r['network_median_ms']:11.1f} "
              f"{100 * r['post_share']:11.1f}% {r['selected_mean']:9.1f}")
    print(f"speed-up (torch / onnx): {report['speedup_median']:.2f}x median, {report['speedup_mean']:.2f}x mean")


# --------------------------------------------------------------------------------------------
# (c) start-up


STARTUP_CODE = {
    "onnx": "from oanet.runtime import OnnxPredictor as P\nload = lambda: P({model!r}, threads={threads})\n",
    "torch": ("import torch\ntorch.set_num_threads({threads})\nfrom oanet import Predictor as P\n"
              "load = lambda: P.from_checkpoint({model!r}, device='cpu')\n"),
}
STARTUP_TEMPLATE = """import time, json, sys
t0 = time.perf_counter()
{setup}t1 = time.perf_counter()
p = load()
t2 = time.perf_counter()
import numpy as np
p(np.load({image!r}))
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_image_s": t3 - t2, "torch": "torch" in sys.modules}}))
"""


def startup(args, work: Path) -> dict:
    checkpoint = Path(args.checkpoint) if args.preset != "r50" else r50_checkpoint(work, args.size, args.logit_scale)
    onnx_path = exported(checkpoint, work, args.onnx)
    image = work / "startup_image.npy"
    np.save(image, np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    report = {"threads": args.threads, "runs": args.runs}
    for backend, model in (("onnx", onnx_path), ("torch", checkpoint)):
        setup = STARTUP_CODE[backend].format(model=str(model), threads=args.threads)
        code = STARTUP_TEMPLATE.format(setup=setup, image=str(image))
        runs = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t0
            runs.append({**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": wall})
        report[backend] = {k: statistics.median(r[k] for r in runs) for k in ("process_s", "import_s", "load_s", "first_image_s")}
        report[backend]["imports_torch"] = runs[0]["torch"]
    return report


def print_startup(report: dict) -> None:
    print(f"median of {report['runs']} fresh processes, {report['threads']} threads (seconds)")
    print(f"{'':6} {'process':>8} {'import':>7} {'load':>7} {'1st image':>9}  torch imported")
    for backend in ("onnx", "torch"):
        r = report[backend]
        print(f"{backend:6} {r['process_s']:8.2f} {r['import_s']:7.2f} {r['load_s']:7.2f} {r['first_image_s']:9.2f}  "
              f"{r['imports_torch']}")


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", help="an oanet checkpoint (demo preset: output/synthetic_cpu/model_final.pth)")
    common.add_argument("--preset", choices=("checkpoint", "r50"), default="checkpoint")
    common.add_argument("--size", type=int, default=512, help="r50 input side; image side for random images")
    common.add_argument("--logit-scale", type=float, default=20.0, help="r50: box classifier weight multiplier")
    common.add_argument("--onnx", help="an exported file to use instead of exporting the checkpoint")
    common.add_argument("--work", default="output/bench_onnx", help="folder for the exported model and predictions")
    common.add_argument("--threads", type=int, default=os.cpu_count())
    common.add_argument("--out", help="write the report as JSON here")
    p = sub.add_parser("parity", parents=[common])
    p.add_argument("--data-json")
    p.add_argument("--data-png-dir")
    p.add_argument("--data-image-dir")
    p.add_argument("--max-images", type=int, default=None)
    p = sub.add_parser("speed", parents=[common])
    p.add_argument("--images", help="image folder (default: random-noise images of --size)")
    p.add_argument("--num-images", type=int, default=50)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--order", choices=("srm", "score", "both"), default="srm")
    p = sub.add_parser("startup", parents=[common])
    p.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("_worker")
    p.add_argument("--backend", choices=("torch", "onnx"), required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--images-npz", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--order", default="srm")
    args = parser.parse_args()
    if args.mode == "_worker":
        worker(args)
        return
    if args.preset != "r50" and not args.checkpoint:
        parser.error("--checkpoint is required unless --preset r50")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run, show = {"parity": (parity, print_parity), "speed": (speed, print_speed),
                 "startup": (startup, print_startup)}[args.mode]
    report = run(args, work)
    show(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
