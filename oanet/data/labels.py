"""Categories and the label space: COCO category ids <-> the network's indices and channels. No torch.

One place for what a category id means to the network (docs/design.md, "Label space"):

- things sorted by COCO id get indices ``t = 0..T-1``, stuff ``s = 0..S-1``;
- the stuff branch's channel space is ``"all"`` (object context: ``C = T + S``, thing t -> t, stuff s
  -> T + s) or ``"stuff"`` (``C = 1 + S``: every thing -> 0, stuff s -> 1 + s);
- ``IGNORE`` (255) marks pixels a target must not learn, ``VOID`` (0) the unlabelled segment id.

The dataset (targets), the model (head width) and both fusions (PyTorch and numpy) take their
channel logic from :class:`LabelSpace` and :func:`num_channels`.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from oanet.errors import DataError

VOID = 0  # segment id of unlabelled pixels in panoptic maps
IGNORE = 255  # target value of pixels a loss ignores
STUFF_CLASSES = ("all", "stuff")
# LabelSpace indexes arrays of size max(id) + 1: ids are bounded (COCO's go up to 200).
MAX_CATEGORY_ID = 2**24 - 1


def is_integer(value: Any) -> bool:
    """An int (not a bool), or a float with an integer value, as JSON writers may give ids."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def check_stuff_classes(stuff_classes: str) -> None:
    if stuff_classes not in STUFF_CLASSES:
        raise ValueError(f"stuff_classes must be 'all' or 'stuff', got {stuff_classes!r}")


def num_channels(num_thing: int, num_stuff: int, stuff_classes: str) -> int:
    """Channels of the stuff branch: ``T + S`` for ``"all"``, ``1 + S`` for ``"stuff"``."""
    check_stuff_classes(stuff_classes)
    return num_thing + num_stuff if stuff_classes == "all" else 1 + num_stuff


def channel_to_stuff_index(num_thing: int, num_stuff: int, stuff_classes: str) -> np.ndarray:
    """Lookup table over the stuff branch's channels: stuff index ``0..S-1``, or -1 for a thing
    channel (``"all"``) or the "any thing" channel (``"stuff"``). Fusion indexes it with the argmax."""
    offset = num_thing if stuff_classes == "all" else 1
    table = np.full(num_channels(num_thing, num_stuff, stuff_classes), -1, dtype=np.int64)
    table[offset:] = np.arange(num_stuff)
    return table


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]
    supercategory: str = ""

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "isthing": int(self.isthing),
            "color": list(self.color),
            "supercategory": self.supercategory,
        }


def generated_color(category_id: int) -> tuple[int, int, int]:
    """A deterministic colour for a category without one: hues spread by the golden ratio.

    It depends on the id only, so a category keeps its colour whatever subset of categories a
    split has.
    """
    hue = (category_id * 0.6180339887498949) % 1.0
    saturation = (0.95, 0.6, 0.8)[category_id % 3]
    value = (0.95, 0.7, 0.85, 0.55)[(category_id // 3) % 4]
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _distinct_colors(categories: Sequence[dict]) -> list[tuple[int, int, int]]:
    """The JSON's colours where given, generated ones elsewhere; generated ones never repeat a used one."""
    used = {tuple(int(c) for c in cat["color"]) for cat in categories if cat.get("color") is not None}
    colors = []
    for cat in categories:
        if cat.get("color") is not None:
            colors.append(tuple(int(c) for c in cat["color"]))
            continue
        color = generated_color(int(cat["id"]))
        while color in used:  # nudge off a collision, deterministically
            color = ((color[0] + 37) % 256, (color[1] + 91) % 256, (color[2] + 53) % 256)
        used.add(color)
        colors.append(color)
    return colors


# --------------------------------------------------------------------------------------------
# label space


class LabelSpace:
    """COCO category ids <-> contiguous thing / stuff indices and stuff-branch channels.

    Things sorted by COCO id get ``t = 0..T-1``, stuff ``s = 0..S-1``. The stuff branch's channel
    space is ``"all"`` (``C = T + S``: thing t -> t, stuff s -> T + s) or ``"stuff"``
    (``C = 1 + S``: every thing -> 0, stuff s -> 1 + s). Lookups of unknown ids raise DataError.
    """

    def __init__(self, categories: Sequence[Category]):
        ids = [c.id for c in categories]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise DataError(f"label space: duplicate category id(s) {duplicates}")
        if not categories:
            raise DataError("label space: no categories")
        if min(ids) < 0:
            raise DataError(f"label space: negative category id {min(ids)}")
        if max(ids) > MAX_CATEGORY_ID:
            raise DataError(f"label space: category id {max(ids)} is above {MAX_CATEGORY_ID}")
        self.categories: tuple[Category, ...] = tuple(sorted(categories, key=lambda c: c.id))
        self._by_id = {c.id: c for c in self.categories}
        self.thing_ids = np.array([c.id for c in self.categories if c.isthing], dtype=np.int64)
        self.stuff_ids = np.array([c.id for c in self.categories if not c.isthing], dtype=np.int64)
        size = max(ids) + 1
        # -1 marks "not a thing" / "not a stuff" / "unknown": lookups index these arrays directly.
        self._known = np.zeros(size, dtype=bool)
        self._known[ids] = True
        self._thing_index = np.full(size, -1, dtype=np.int64)
        self._thing_index[self.thing_ids] = np.arange(len(self.thing_ids))
        self._stuff_index = np.full(size, -1, dtype=np.int64)
        self._stuff_index[self.stuff_ids] = np.arange(len(self.stuff_ids))

    # sizes ----------------------------------------------------------------------------------
    @property
    def num_things(self) -> int:
        return len(self.thing_ids)

    @property
    def num_stuff(self) -> int:
        return len(self.stuff_ids)

    def num_channels(self, stuff_classes: str = "all") -> int:
        return num_channels(self.num_things, self.num_stuff, stuff_classes)

    def channel_to_stuff_index(self, stuff_classes: str = "all") -> np.ndarray:
        """See :func:`channel_to_stuff_index`."""
        return channel_to_stuff_index(self.num_things, self.num_stuff, stuff_classes)

    # lookups --------------------------------------------------------------------------------
    def category(self, category_id: int) -> Category:
        try:
            return self._by_id[int(category_id)]
        except KeyError:
            raise DataError(f"unknown category id {category_id}") from None

    def check_known(self, category_ids: Iterable[int] | np.ndarray, where: str = "") -> np.ndarray:
        """``category_ids`` as int64, or DataError naming ``where`` and the unknown ids."""
        ids = np.asarray(category_ids, dtype=np.int64).reshape(-1)
        inside = (ids >= 0) & (ids < len(self._known))
        known = np.zeros(ids.shape, dtype=bool)
        known[inside] = self._known[ids[inside]]
        if not known.all():
            unknown = sorted(set(ids[~known].tolist()))
            prefix = f"{where}: " if where else ""
            raise DataError(f"{prefix}unknown category id(s) {unknown}")
        return ids

    def is_thing(self, category_ids, where: str = "") -> np.ndarray:
        return self.thing_index(category_ids, where) >= 0

    def thing_index(self, category_ids, where: str = "") -> np.ndarray:
        """Thing index ``0..T-1`` of each id, -1 for stuff."""
        return self._thing_index[self.check_known(category_ids, where)]

    def stuff_index(self, category_ids, where: str = "") -> np.ndarray:
        """Stuff index ``0..S-1`` of each id, -1 for things."""
        return self._stuff_index[self.check_known(category_ids, where)]

    def channel(self, category_ids, stuff_classes: str = "all", where: str = "") -> np.ndarray:
        """Stuff-branch channel of each category id in the given channel space."""
        check_stuff_classes(stuff_classes)
        ids = self.check_known(category_ids, where)
        thing, stuff = self._thing_index[ids], self._stuff_index[ids]
        if stuff_classes == "all":
            return np.where(thing >= 0, thing, self.num_things + stuff)
        return np.where(thing >= 0, 0, 1 + stuff)

    def channel_category_ids(self, stuff_classes: str = "all") -> np.ndarray:
        """COCO category id of each stuff-branch channel (-1 for the "any thing" channel of "stuff")."""
        check_stuff_classes(stuff_classes)
        if stuff_classes == "all":
            return np.concatenate([self.thing_ids, self.stuff_ids])
        return np.concatenate([[-1], self.stuff_ids]).astype(np.int64)

    # names and colours ----------------------------------------------------------------------
    @property
    def thing_names(self) -> list[str]:
        return [self._by_id[i].name for i in self.thing_ids.tolist()]

    @property
    def stuff_names(self) -> list[str]:
        return [self._by_id[i].name for i in self.stuff_ids.tolist()]

    def color(self, category_id: int) -> tuple[int, int, int]:
        return self.category(category_id).color

    # serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"categories": [c.to_dict() for c in self.categories]}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSpace":
        return cls(parse_categories(data.get("categories", []), "label space"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSpace) and self.categories == other.categories

    def __repr__(self) -> str:
        return f"LabelSpace(things={self.num_things}, stuff={self.num_stuff})"


def parse_categories(raw: Any, where: str) -> list[Category]:
    """Categories from a COCO ``categories`` list; colours generated where absent."""
    if not isinstance(raw, list):
        raise DataError(f"{where}: 'categories' must be a list")
    for cat in raw:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(f"{where}: category without 'id' and 'name': {cat!r}")
        if not is_integer(cat["id"]):
            raise DataError(f"{where}: category id {cat['id']!r} is not an integer")
        if not 0 <= cat["id"] <= MAX_CATEGORY_ID:
            raise DataError(f"{where}: category id {cat['id']!r} is outside 0..{MAX_CATEGORY_ID}")
        color = cat.get("color")
        if color is not None and not (
            isinstance(color, (list, tuple)) and len(color) == 3 and all(is_integer(c) and 0 <= c <= 255 for c in color)
        ):
            raise DataError(f"{where}: category {cat['id']} has a bad colour {color!r} (expected [R, G, B] in 0..255)")
    ids = [int(cat["id"]) for cat in raw]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"{where}: duplicate category id(s) {duplicates}")
    colors = _distinct_colors(raw)
    return [
        Category(
            id=int(cat["id"]),
            name=str(cat["name"]),
            # instances JSONs have no isthing: every category there is a thing
            isthing=bool(cat.get("isthing", 1)),
            color=color,
            supercategory=str(cat.get("supercategory", "")),
        )
        for cat, color in zip(raw, colors)
    ]


def category_ids(label_space: LabelSpace) -> tuple[list[int], list[int]]:
    """``(thing COCO ids by thing index, stuff COCO ids by stuff index)`` of a label space."""
    if not isinstance(label_space, LabelSpace):
        raise TypeError(f"label_space must be an oanet.data.labels.LabelSpace, got {type(label_space).__name__}")
    return label_space.thing_ids.tolist(), label_space.stuff_ids.tolist()
