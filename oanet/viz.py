"""Panoptic overlays: coloured segments blended over the image, outlines, class names.

Pillow and numpy only (no torch, no matplotlib), so overlays can be drawn anywhere predictions can be
read. Colouring is a table lookup over the id map, never a loop over pixels; the only Python loop is
over segments, to place their names.
"""

from __future__ import annotations

import colorsys
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from oanet.data.labels import generated_color
from oanet.data.morphology import label_boundary

VOID_COLOR = (0, 0, 0)
OUTLINE_COLOR = (255, 255, 255)
TITLE_HEIGHT = 24


def instance_color(base: Sequence[int], instance_index: int) -> tuple[int, int, int]:
    """The category colour ``base`` shifted per instance, so touching instances of one class stay apart."""
    if instance_index == 0:
        return tuple(int(c) for c in base)
    h, s, v = colorsys.rgb_to_hsv(*(np.asarray(base, dtype=np.float64) / 255.0))
    # Small hue steps keep the class recognisable; a varying brightness separates instances.
    h = (h + 0.07 * ((instance_index + 1) // 2) * (1 if instance_index % 2 else -1)) % 1.0
    v = min(1.0, max(0.35, v - 0.15 * (instance_index % 3)))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def segment_colors(segments: Sequence[Mapping], categories: Mapping[int, Mapping]) -> dict[int, tuple]:
    """Colour of every segment id: stuff in its category colour, things varied per instance.

    A category's colour is its ``color`` entry (COCO panoptic JSONs carry one) or the one a label space
    would give it (:func:`oanet.data.labels.generated_color`).
    """
    colors: dict[int, tuple] = {}
    seen_per_category: dict[int, int] = {}
    for seg in segments:
        cat_id = int(seg["category_id"])
        category = categories.get(cat_id, {})
        base = tuple(category["color"]) if category.get("color") is not None else generated_color(cat_id)
        if bool(category.get("isthing", seg.get("isthing", False))):
            index = seen_per_category.get(cat_id, 0)
            seen_per_category[cat_id] = index + 1
            colors[int(seg["id"])] = instance_color(base, index)
        else:
            colors[int(seg["id"])] = base
    return colors


def colorize(panoptic_ids: np.ndarray, colors: Mapping[int, tuple]) -> np.ndarray:
    """An HxWx3 uint8 picture of an id map; ids without a colour (void, 0) are VOID_COLOR."""
    ids = np.asarray(panoptic_ids)
    unique, inverse = np.unique(ids, return_inverse=True)
    table = np.array([colors.get(int(u), VOID_COLOR) for u in unique], dtype=np.uint8).reshape(-1, 3)
    return table[inverse.reshape(ids.shape)]


def segment_boundaries(panoptic_ids: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Boolean HxW map of the pixels next to another segment (both sides of every border)."""
    return label_boundary(np.asarray(panoptic_ids), thickness)


def segment_centroids(panoptic_ids: np.ndarray, segment_ids: Iterable[int]) -> dict[int, tuple[float, float]]:
    """(x, y) mean pixel position of each listed segment present in the map."""
    ids = np.asarray(panoptic_ids)
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    ys, xs = np.indices(ids.shape)
    sum_x = np.bincount(inverse, weights=xs.reshape(-1), minlength=len(unique))
    sum_y = np.bincount(inverse, weights=ys.reshape(-1), minlength=len(unique))
    index_of = {int(u): i for i, u in enumerate(unique)}
    centroids = {}
    for seg_id in segment_ids:
        i = index_of.get(int(seg_id))
        if i is not None:
            centroids[int(seg_id)] = (sum_x[i] / counts[i], sum_y[i] / counts[i])
    return centroids


def default_font(size: int):
    """Pillow's default font at ``size`` px where Pillow can scale it (>= 10.1 with FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # older Pillow, or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def label_font_size(width: int, height: int) -> int:
    return int(min(max(11, min(width, height) // 24), 28))


def _label_text(seg: Mapping, categories: Mapping[int, Mapping], show_scores: bool) -> str:
    cat = categories.get(int(seg["category_id"]), {})
    text = str(cat.get("name", seg["category_id"]))
    if show_scores and "score" in seg and seg.get("isthing", cat.get("isthing", False)):
        text += f" {float(seg['score']):.2f}"
    return text


# A segment smaller than this share of the picture gets no name: at 256 px the names of small
# segments covered them and each other.
MIN_LABEL_SHARE = 0.004


def _label_box(xy: tuple[float, float], text_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The label's background box ``(x0, y0, x1, y1)``, centred on ``xy`` and kept inside the picture."""
    w, h = text_size
    x = int(min(max(xy[0] - w / 2, 0), max(size[0] - w - 2, 0)))
    y = int(min(max(xy[1] - h / 2, 0), max(size[1] - h - 2, 0)))
    return x - 1, y - 1, x + w + 1, y + h + 1


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def place_labels(
    panoptic_ids: np.ndarray,
    segments: Sequence[Mapping],
    texts: Mapping[int, str],
    text_size: Callable[[str], tuple[int, int]],
    min_label_area: int = 0,
    min_share: float = MIN_LABEL_SHARE,
) -> list[tuple[int, tuple[int, int, int, int]]]:
    """``(segment id, label box)`` of the segments to name, largest segment first.

    A segment is named when it covers at least ``min_share`` of the picture and ``min_label_area``
    pixels, is larger than its own label, and its label, centred on its centroid, overlaps no label of a
    larger segment; the others stay unnamed (their colours and outlines still show them).
    """
    ids = np.asarray(panoptic_ids)
    height, width = ids.shape
    unique, counts = np.unique(ids, return_counts=True)
    area_of = dict(zip(unique.tolist(), counts.tolist()))
    centroids = segment_centroids(ids, [int(seg["id"]) for seg in segments])
    smallest = max(float(min_label_area), min_share * width * height)
    placed: list[tuple[int, tuple[int, int, int, int]]] = []
    for seg_id in sorted(centroids, key=lambda i: (-area_of[i], i)):
        area = area_of[seg_id]
        if area < smallest or seg_id not in texts:
            continue
        w, h = text_size(texts[seg_id])
        box = _label_box(centroids[seg_id], (w, h), (width, height))
        if (w + 2) * (h + 2) > area or any(_overlaps(box, other) for _, other in placed):
            continue
        placed.append((seg_id, box))
    return placed


def _draw_labels(picture: Image.Image, ids: np.ndarray, segments: Sequence[Mapping], categories: Mapping[int, Mapping],
                 show_scores: bool, min_label_area: int) -> None:
    draw = ImageDraw.Draw(picture)
    font = default_font(label_font_size(*picture.size))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    texts = {int(seg["id"]): _label_text(seg, categories, show_scores) for seg in segments}
    for seg_id, (x0, y0, x1, y1) in place_labels(ids, segments, texts, text_size, min_label_area):
        left, top, _, _ = draw.textbbox((0, 0), texts[seg_id], font=font)
        draw.rectangle((x0, y0, x1, y1), fill=(0, 0, 0))
        draw.text((x0 + 1 - left, y0 + 1 - top), texts[seg_id], fill=(255, 255, 255), font=font)


def draw_panoptic(
    image: Image.Image | np.ndarray,
    panoptic_ids: np.ndarray,
    segments: Sequence[Mapping],
    categories: Mapping[int, Mapping],
    alpha: float = 0.55,
    outlines: bool = True,
    labels: bool = True,
    show_scores: bool = False,
    min_label_area: int = 0,
) -> Image.Image:
    """The image with every segment coloured (blended by ``alpha``), outlined and named.

    ``panoptic_ids`` is the HxW segment-id map (0 = void), ``segments`` its segments_info entries
    (``id``, ``category_id``, optionally ``isthing``/``score``), ``categories`` maps a COCO category id
    to a dict with ``name`` and ``isthing``. Void pixels keep the image unchanged. Small segments, and
    those whose name would cover a larger segment's, are left unnamed (:func:`place_labels`).
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    ids = np.asarray(panoptic_ids)
    if rgb.shape[:2] != ids.shape:
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but the id map is {ids.shape[1]}x{ids.shape[0]}")
    colors = segment_colors(segments, categories)
    color_map = colorize(ids, colors).astype(np.float32)
    painted = np.isin(ids, np.fromiter(colors.keys(), dtype=ids.dtype, count=len(colors)))[..., None]
    blended = np.where(painted, (1 - alpha) * rgb.astype(np.float32) + alpha * color_map, rgb)
    if outlines:
        blended[segment_boundaries(ids)] = OUTLINE_COLOR
    picture = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    if labels and segments:
        _draw_labels(picture, ids, segments, categories, show_scores, min_label_area)
    return picture


def enlarge(image: np.ndarray, panoptic_ids: np.ndarray, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and id map repeated by a whole factor so the shorter side reaches ``min_side``.

    For small images, whose labels would otherwise cover the segments; ids are repeated, never
    interpolated, so segments stay exact.
    """
    factor = max(1, -(-min_side // max(1, min(panoptic_ids.shape))))
    if factor == 1:
        return np.asarray(image), np.asarray(panoptic_ids)
    grow = lambda a: np.repeat(np.repeat(np.asarray(a), factor, axis=0), factor, axis=1)  # noqa: E731
    return grow(image), grow(panoptic_ids)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def with_title(picture: Image.Image, title: str, height: int = TITLE_HEIGHT) -> Image.Image:
    """The picture under a black title bar (the title cut to the picture's width)."""
    canvas = Image.new("RGB", (picture.width, picture.height + height), (0, 0, 0))
    canvas.paste(picture, (0, height))
    draw = ImageDraw.Draw(canvas)
    font = default_font(height * 2 // 3)
    title = _fit_text(draw, title, font, picture.width - 8)
    left, top, right, bottom = draw.textbbox((0, 0), title, font=font)
    draw.text((4 - left, (height - (bottom - top)) // 2 - top), title, fill=(255, 255, 255), font=font)
    return canvas


def side_by_side(panels: Sequence[tuple[str, Image.Image]], gap: int = 4) -> Image.Image:
    """Titled pictures in a row (e.g. heuristic vs SRM order), aligned at the top."""
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    titled = [with_title(picture, title) for title, picture in panels]
    width = sum(p.width for p in titled) + gap * (len(titled) - 1)
    height = max(p.height for p in titled)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    x = 0
    for p in titled:
        canvas.paste(p, (x, 0))
        x += p.width + gap
    return canvas


def categories_by_id(categories: Iterable[Mapping]) -> dict[int, dict]:
    """COCO ``categories`` list -> {id: category dict}, the lookup the drawing functions take."""
    return {int(c["id"]): dict(c) for c in categories}
