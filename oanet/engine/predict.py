"""Panoptic prediction on image files and folders: COCO panoptic PNG + JSON and overlay pictures.

Layout of ``out_dir`` for one order (``--order srm`` or ``score``)::

    panoptic.json                COCO panoptic: images, annotations (segments_info), categories
    panoptic/<name>.png          segment ids as RGB (id = R + 256 G + 256^2 B)
    overlays/<name>.jpg          segments coloured over the image, outlined and named

With ``--order both`` the PNGs and JSON of each order go to ``score_order/`` and ``srm_order/`` and
each overlay shows the heuristic and the SRM result side by side.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from oanet.config import Config
from oanet.data.dataset import collate, image_to_tensor
from oanet.data.images import list_image_files, load_rgb_image
from oanet.errors import DataError, make_dir

ORDERS = ("score", "srm")
ORDER_TITLES = {"score": "heuristic (detection-score order)", "srm": "SRM (ranking-score order)"}


# --------------------------------------------------------------------------------------------
# inputs


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the named folders."""
    return list_image_files(list(inputs))


def load_image(path: Path) -> torch.Tensor:
    """RGB float32 3xHxW in 0..1; DataError names the file when it is not a readable image."""
    return image_to_tensor(load_rgb_image(path))


def unique_output_names(paths: Sequence[Path]) -> list[str]:
    """File stems to name each image's outputs by; repeated stems get a ``_2``, ``_3``... suffix."""
    names, used = [], set()
    for path in paths:
        name, k = path.stem, 1
        while name in used:
            k += 1
            name = f"{path.stem}_{k}"
        used.add(name)
        names.append(name)
    return names


class ImageListDataset(torch.utils.data.Dataset):
    """Images by path with their COCO ``image_id`` and ``file_name`` (the PNG is named after it).

    A file that cannot be read does not raise inside a DataLoader worker (where the message would be
    buried in a traceback): the sample carries the error and the consumer raises it as one line.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        image_ids: Sequence[int],
        file_names: Sequence[str],
        sizes: Optional[Sequence[tuple[int, int]]] = None,
    ):
        self.paths = [Path(p) for p in paths]
        self.image_ids = list(image_ids)
        self.file_names = list(file_names)
        # (width, height) the annotation gives each image, checked when it is loaded (None: not checked)
        self.sizes = list(sizes) if sizes is not None else None

    @classmethod
    def from_paths(cls, paths: Sequence[Path]) -> "ImageListDataset":
        names = unique_output_names(paths)
        return cls(paths, range(1, len(paths) + 1), [n + p.suffix for n, p in zip(names, paths)])

    @classmethod
    def from_panoptic_json(
        cls, panoptic_json: Path, image_dir: Path, max_images: Optional[int] = None
    ) -> "ImageListDataset":
        """The images a COCO panoptic JSON annotates, with its ids and the PNG names it uses."""
        from oanet.data.coco_panoptic import read_images

        # validated entries (id, file_name, width, height); ids of mixed kinds still sort
        parsed = read_images(panoptic_json)
        images = sorted(parsed, key=lambda img: (isinstance(img.id, str), img.id))
        if max_images is not None:
            images = images[: max(0, max_images)]
        if not images:
            raise DataError(f"{panoptic_json}: no images to evaluate")
        return cls(
            [Path(image_dir) / img.file_name for img in images],
            [img.id for img in images],
            [img.file_name for img in images],
            sizes=[(img.width, img.height) for img in images],
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        info = {"image_id": self.image_ids[index], "file_name": self.file_names[index], "path": str(self.paths[index])}
        try:
            if self.sizes is not None:
                # an image of another size than its annotation would be scored against the wrong pixels
                return image_to_tensor(load_rgb_image(self.paths[index], self.sizes[index])), info
            return load_image(self.paths[index]), info
        except (DataError, FileNotFoundError) as exc:
            return None, {**info, "error": str(exc)}


def check_resizable(image: torch.Tensor, cfg: Config, path: str) -> None:
    """DataError naming the file when the model's resize would shrink a side to 0 pixels (an image
    hundreds of times wider than high), instead of an interpolation error deep inside torch."""
    height, width = image.shape[-2:]
    short, long = min(height, width), max(height, width)
    scale = min(float(cfg.model.min_size[-1]) / short, float(cfg.model.max_size) / long)
    if int(short * scale) < 1:
        raise DataError(
            f"{path}: image is {width}x{height}; resized to the model's input (max side {cfg.model.max_size}) "
            "its short side would be 0 pixels"
        )


def image_record(image: torch.Tensor, info: dict) -> dict:
    """The COCO ``images`` entry of a loaded image."""
    return {"id": info["image_id"], "file_name": info["file_name"], "height": image.shape[-2], "width": image.shape[-1]}


def collate_images(batch: list) -> tuple[list, list]:
    """Images differ in size, so a batch stays a list; a sample that failed to load raises here."""
    for _, info in batch:
        if "error" in info:
            raise DataError(info["error"])
    return collate(batch)


# --------------------------------------------------------------------------------------------
# fusion of one model output


def fuse_orders(output: dict, label_space, cfg: Config, orders: Sequence[str] = ORDERS) -> dict:
    """``{order: (ids, segments)}`` for one image's model output, fused in each of ``orders``.

    The stuff branch's CxHxW probabilities are reduced to labels on their own device; only the
    HxW id maps come back to the CPU (as numpy int32).
    """
    from oanet.model import fusion

    fused = fusion.fuse(output, label_space, cfg.model.stuff_head.classes, cfg.model.fusion, orders=orders)
    return {order: (ids.cpu().numpy().astype(np.int32), segments) for order, (ids, segments) in fused.items()}


def fuse_both_orders(output: dict, label_space, cfg: Config) -> dict:
    """``{"score": (ids, segments), "srm": (ids, segments)}`` for one image's model output."""
    return fuse_orders(output, label_space, cfg, ("score", "srm"))


def with_score_thresh(cfg: Config, score_thresh: Optional[float]) -> Config:
    """``cfg`` with ``model.fusion.score_thresh`` replaced (None keeps the config's)."""
    if score_thresh is None:
        return cfg
    if not 0.0 <= score_thresh <= 1.0:
        raise ValueError(f"score threshold must be in [0, 1], got {score_thresh}")
    fusion = dataclasses.replace(cfg.model.fusion, score_thresh=float(score_thresh))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fusion=fusion))


# --------------------------------------------------------------------------------------------
# prediction


def predict(
    model,
    cfg: Config,
    label_space,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    order: str = "srm",
    score_thresh: Optional[float] = None,
    batch_size: int = 1,
    num_workers: int = 0,
    overlays: bool = True,
    progress: bool = True,
) -> dict:
    """Predict every image in ``inputs`` (files or folders) and write PNGs, JSON and overlays.

    ``order`` is ``"srm"``, ``"score"`` or ``"both"``. Returns ``{"images": n, "panoptic_json":
    {order: path}, "overlay_dir": path or None}``.
    """
    from tqdm import tqdm

    from oanet import viz
    from oanet.data.coco_panoptic import PanopticWriter

    if order not in ("srm", "score", "both"):
        raise ValueError(f"order must be 'srm', 'score' or 'both', got {order!r}")
    orders = ORDERS if order == "both" else (order,)
    cfg = with_score_thresh(cfg, score_thresh)
    paths = list_images(inputs)
    dataset = ImageListDataset.from_paths(paths)
    out_dir = make_dir(out_dir)

    category_lookup = viz.categories_by_id(c.to_dict() for c in label_space.categories)
    writers = {}
    for o in orders:
        folder = out_dir / f"{o}_order" if order == "both" else out_dir
        writers[o] = PanopticWriter(folder / "panoptic.json", folder / "panoptic", label_space)
    overlay_dir = out_dir / "overlays"
    if overlays:
        overlay_dir.mkdir(exist_ok=True)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_images
    )
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for images, infos in tqdm(loader, desc="predict", unit="batch", disable=not progress):
            for image, info in zip(images, infos):
                check_resizable(image, cfg, info["path"])
            outputs = model([image.to(device, non_blocking=True) for image in images],
                            score_thresh=cfg.model.fusion.score_thresh)
            for image, output, info in zip(images, outputs, infos):
                fused = fuse_orders(output, label_space, cfg, orders)
                panels = []
                for o in orders:
                    ids, segments = fused[o]
                    annotation = writers[o].add(image_record(image, info), ids, segments)
                    panels.append((ORDER_TITLES[o], ids, with_scores(annotation["segments_info"], segments)))
                if overlays:
                    picture = _overlay(image, panels, category_lookup)
                    picture.save(overlay_dir / (Path(info["file_name"]).stem + ".jpg"), quality=92)

    return {
        "images": len(dataset),
        "panoptic_json": {o: str(w.close()) for o, w in writers.items()},
        "overlay_dir": str(overlay_dir) if overlays else None,
    }


def with_scores(segments_info: Sequence[dict], fused_segments: Sequence[dict]) -> list[dict]:
    """``segments_info`` entries with the fusion's ``score`` and ``isthing`` added (for labelling)."""
    extra = {int(s["id"]): s for s in fused_segments}
    return [
        {**seg, **{k: extra[seg["id"]][k] for k in ("score", "isthing") if k in extra.get(seg["id"], {})}}
        for seg in segments_info
    ]


def _overlay(image: torch.Tensor, panels: Iterable[tuple], categories: dict) -> Image.Image:
    from oanet import viz

    rgb = image.mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
    pictures = [
        (title, viz.draw_panoptic(rgb, ids, segments, categories, show_scores=True)) for title, ids, segments in panels
    ]
    if len(pictures) == 1:
        return pictures[0][1]
    return viz.side_by_side(pictures)
