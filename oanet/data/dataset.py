"""torch Dataset of a COCO panoptic split -> (image, target) per docs/design.md. 
Samples stay at the image's original size: the model resizes (torchvision style), so every target
is resized once, consistently, there.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch

from oanet.data import targets as T
from oanet.data.coco_panoptic import ImageInfo, PanopticSplit
from oanet.data.labels import LabelSpace, check_stuff_classes
from oanet.data.images import load_rgb_image
from oanet.data.transforms import Transform, build_transforms


def image_to_tensor(array: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 3xHxW in 0..1 (contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


class PanopticDataset(torch.utils.data.Dataset):
    """A COCO panoptic split as ``(image float32 3xHxW in 0..1, target dict)`` samples.

    ``split`` is a ``PanopticSplit`` or the panoptic JSON's path (then ``panoptic_dir`` and
    ``image_dir`` are required). The target has ``boxes``, ``labels``, ``masks``, ``sem_seg``,
    ``srm``, ``image_id``, ``file_name`` (docs/design.md).

    Augmentation randomness comes from ``numpy.random.default_rng((seed, epoch, index))``: a sample
    is the same on any worker, process count, or after resuming. ``get(index, epoch)`` names the
    epoch (DataLoader workers hold copies of the dataset, so no epoch is kept in it);
    ``dataset[(index, epoch)]`` does the same; ``dataset[index]`` is epoch 0.
    """

    def __init__(
        self,
        split: PanopticSplit | str | Path,
        panoptic_dir: Optional[str | Path] = None,
        image_dir: Optional[str | Path] = None,
        *,
        instances_json: Optional[str | Path] = None,
        categories_json: Optional[str | Path] = None,
        label_space: Optional[LabelSpace] = None,
        instance_source: Literal["instances", "panoptic"] = "instances",
        stuff_classes: Literal["all", "stuff"] = "all",
        transforms: Optional[Transform] = None,
        hflip_prob: float = 0.0,
        train: bool = True,
        seed: int = 0,
    ):
        if not isinstance(split, PanopticSplit):
            if panoptic_dir is None or image_dir is None:
                raise ValueError("give a PanopticSplit, or the panoptic JSON with panoptic_dir and image_dir")
            split = PanopticSplit(split, panoptic_dir, image_dir, instances_json, categories_json)
        if instance_source not in ("instances", "panoptic"):
            raise ValueError(f"instance_source must be 'instances' or 'panoptic', got {instance_source!r}")
        check_stuff_classes(stuff_classes)
        if instance_source == "instances" and not split.has_instances:
            warnings.warn(
                f"{split.panoptic_json}: no instances_json given; instance targets come from the panoptic "
                "PNGs (non-overlapping, Table 3's 'pano-instance GT'), so the SRM target is empty",
                stacklevel=2,
            )
            instance_source = "panoptic"
        self.split = split
        self.label_space = label_space if label_space is not None else split.label_space()
        # Fail now, not at sample 10 000, when the split uses categories the label space lacks.
        self.label_space.check_known(split.used_category_ids(), str(split.panoptic_json))
        self.instance_source = instance_source
        self.stuff_classes = stuff_classes
        self.transforms = transforms if transforms is not None else build_transforms(hflip_prob, train)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.split)

    def image_info(self, index: int) -> ImageInfo:
        return self.split.images[index]

    def aspect_ratios(self) -> list[float]:
        """width / height per sample, from the JSON (no image decoding), for aspect-ratio grouping."""
        return self.split.aspect_ratios()

    def sample_rng(self, index: int, epoch: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict]:
        if isinstance(key, tuple):
            return self.get(*key)
        return self.get(key)

    def get(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, dict]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = index % len(self)
        image, target = self.load(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target, self.sample_rng(index, epoch))
        return image, target

    def load(self, index: int) -> tuple[torch.Tensor, dict]:
        """The sample without augmentation."""
        info = self.split.images[index]
        image = load_rgb_image(self.split.image_path(info.id), (info.width, info.height))
        ann = self.split.annotation(info.id)
        index_map = self.split.load_index_map(info.id)
        where = str(self.split.panoptic_json)
        segment_thing = self.label_space.thing_index(ann.category_ids, where)
        segment_channel = self.label_space.channel(ann.category_ids, self.stuff_classes, where)

        if self.instance_source == "instances":
            masks, category_ids, iscrowd = self.split.load_instance_masks(info.id)
            thing = self.label_space.thing_index(category_ids, str(self.split.instances_json))
            boxes, labels, masks = T.instances_from_masks(masks, thing, iscrowd)
        else:
            boxes, labels, masks = T.instances_from_panoptic(index_map, segment_thing, ann.iscrowd)

        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks),
            "sem_seg": torch.from_numpy(T.semantic_target(index_map, segment_channel)),
            "srm": torch.from_numpy(T.srm_target(masks, index_map, segment_thing, ann.iscrowd)),
            "image_id": info.id,
            "file_name": info.file_name,
        }
        return image_to_tensor(image), target


def collate(batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[list[torch.Tensor], list[Any]]:
    """``[(image, target), ...]`` -> ``([images], [targets])``: sizes differ, the model batches them."""
    images = [sample[0] for sample in batch]
    targets = [sample[1] for sample in batch]
    return images, targets
