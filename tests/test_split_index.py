"""The split's annotation columns: the fast checks agree with the entry-by-entry ones, the cache file
round-trips, is rebuilt when stale or damaged, and forked or spawned workers read the same records."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from oanet.data import split_build
from oanet.data.coco_panoptic import PanopticSplit
from oanet.data.split_index import SplitIndex, cache_path
from oanet.data.store import CorruptFileError, read_columns, write_columns
from oanet.errors import DataError
from test_coco_panoptic import edit_json, write_split


def coco16_paths(root: Path) -> dict:
    ann = root / "annotations"
    return {
        "panoptic_json": ann / "panoptic_val2017.json",
        "panoptic_dir": ann / "panoptic_val2017",
        "image_dir": root / "val2017",
        "instances_json": ann / "instances_val2017.json",
    }


@pytest.fixture
def split_paths(tmp_path: Path) -> dict:
    return write_split(tmp_path / "data")


def records(split: PanopticSplit) -> list:
    """Everything a split holds per image, as plain Python values."""
    out = []
    for info in split.images:
        ann = split.annotation(info.id)
        arrays = [ann.segment_ids, ann.category_ids, ann.iscrowd, ann.areas, ann.bboxes]
        out.append((info, ann.image_id, ann.file_name, [(a.dtype.str, a.tolist()) for a in arrays],
                    split.png_path(info.id), split.instance_annotations(info.id) if split.has_instances else None))
    return out


def assert_same_split(a: PanopticSplit, b: PanopticSplit) -> None:
    assert len(a) == len(b) and a.images == list(b.images) and a.categories == b.categories
    assert records(a) == records(b)
    assert a.aspect_ratios() == b.aspect_ratios()


# --------------------------------------------------------------------------------------------
# the column file


def test_column_file_round_trip_and_damage(tmp_path):
    columns = {"ints": np.arange(5, dtype=np.int64), "boxes": np.ones((3, 4)), "flags": np.array([True, False]),
               "empty": np.zeros((0, 4), np.float32), "ragged": [b"ab", b"", b"cde"]}
    path = write_columns(tmp_path / "c.col", columns, {"note": "x"})
    read, meta = read_columns(path)
    assert meta == {"note": "x"} and list(read) == list(columns)
    for name in ("ints", "boxes", "flags", "empty"):
        assert read[name].dtype == columns[name].dtype and np.array_equal(read[name], columns[name])
        assert not read[name].flags.writeable
    assert read["ragged"].tobytes() == b"abcde"
    assert [p.name for p in tmp_path.iterdir()] == ["c.col"]  # no temporary left

    data = path.read_bytes()
    for damaged, message in [(data[:-64], "truncated"), (b"PK" + data[2:], "not an oanet column file"),
                             (data[:16] + b"{" * 8 + data[24:], "unreadable header"), (b"", "too short")]:
        path.write_bytes(damaged)
        with pytest.raises(CorruptFileError, match=f"{path.name}: .*{message}"):
            read_columns(path)


# --------------------------------------------------------------------------------------------
# building: the vectorised checks and the entry-by-entry ones give the same columns


def _both_ways(panoptic_json: Path) -> tuple[dict, dict]:
    data = json.loads(panoptic_json.read_text())
    images = split_build.parse_images(data["images"], "p.json")
    position = {img.id: i for i, img in enumerate(images)}
    known = np.array(sorted(c["id"] for c in data["categories"]))
    fast = split_build._fast_annotation_columns(data["annotations"], position, known)
    checked = split_build._checked_annotation_columns(data["annotations"], "p.json", position, known)
    return fast, checked


def _assert_same_columns(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = (np.frombuffer(b"".join(c), np.uint8) if isinstance(c, list) else c for c in (a[name], b[name]))
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_fast_and_entry_by_entry_checks_give_the_same_columns(split_paths):
    fast, checked = _both_ways(split_paths["panoptic_json"])
    assert fast is not None
    _assert_same_columns(fast, checked)


def test_fast_and_entry_by_entry_checks_agree_on_coco(coco16):
    fast, checked = _both_ways(coco16_paths(coco16)["panoptic_json"])
    assert fast is not None
    _assert_same_columns(fast, checked)


@pytest.mark.parametrize("edit", [
    lambda d: d["annotations"][0]["segments_info"][0].update(id=11.0),  # an integral float: valid, unusual
    lambda d: d["annotations"].reverse(),
    lambda d: d["annotations"][1]["segments_info"].clear(),
])
def test_unusual_but_valid_annotations_give_the_same_columns(split_paths, edit):
    edit_json(split_paths["panoptic_json"], edit)
    fast, checked = _both_ways(split_paths["panoptic_json"])
    if fast is not None:
        _assert_same_columns(fast, checked)
    split = PanopticSplit(**split_paths)
    assert split.annotation(1).segment_ids.tolist()[0] == 11


# --------------------------------------------------------------------------------------------
# the cache


def test_cache_round_trip_equals_the_parsed_json(coco16, tmp_path):
    paths = coco16_paths(coco16)
    parsed = PanopticSplit(**paths)
    built = PanopticSplit(**paths, cache_dir=tmp_path / "cache")
    mapped = PanopticSplit(**paths, cache_dir=tmp_path / "cache")
    assert parsed.cache_file is None and built.cache_file == mapped.cache_file
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [built.cache_file.name]
    assert_same_split(parsed, mapped)
    assert_same_split(built, mapped)
    # against the JSONs themselves
    panoptic = json.loads(paths["panoptic_json"].read_text())
    instances = json.loads(paths["instances_json"].read_text())["annotations"]
    assert [img.to_dict() for img in mapped.images] == [
        {k: img[k] for k in ("id", "file_name", "width", "height")} for img in panoptic["images"]]
    for raw in panoptic["annotations"]:
        ann = mapped.annotation(raw["image_id"])
        assert ann.segment_ids.tolist() == [s["id"] for s in raw["segments_info"]]
        assert ann.bboxes.tolist() == [[float(v) for v in s["bbox"]] for s in raw["segments_info"]]
        assert ann.areas.tolist() == [s["area"] for s in raw["segments_info"]]
        expected = [{"id": a["id"], "category_id": a["category_id"], "iscrowd": a["iscrowd"],
                     "segmentation": a["segmentation"]} for a in instances if a["image_id"] == raw["image_id"]]
        assert mapped.instance_annotations(raw["image_id"]) == expected
    for info in mapped.images[:3]:
        for a, b in zip(parsed.load_instance_masks(info.id), mapped.load_instance_masks(info.id)):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_a_cached_split_does_not_parse_the_json(split_paths, tmp_path, monkeypatch):
    first = PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed the JSON again")

    monkeypatch.setattr(split_build, "read_json", no_parsing)
    assert_same_split(first, PanopticSplit(**split_paths, cache_dir=tmp_path / "cache"))
    # a split without instances is another cache file, not this one
    with pytest.raises(AssertionError, match="parsed the JSON again"):
        PanopticSplit(**{**split_paths, "instances_json": None}, cache_dir=tmp_path / "cache")


def test_a_stale_cache_is_rebuilt(split_paths, tmp_path):
    cache = tmp_path / "cache"
    PanopticSplit(**split_paths, cache_dir=cache)
    edit_json(split_paths["panoptic_json"], lambda d: d["annotations"][0]["segments_info"][0].update(category_id=3))
    assert PanopticSplit(**split_paths, cache_dir=cache).annotation(1).category_ids[0] == 3
    # same size and modification time, other content: the sampled hash catches it
    path = split_paths["instances_json"]
    stat = path.stat()
    path.write_text(path.read_text().replace('"category_id": 3', '"category_id": 1'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert [a["category_id"] for a in PanopticSplit(**split_paths, cache_dir=cache).instance_annotations(1)] == [1, 1, 1]
    assert len(list(cache.iterdir())) == 1


def _damage_instances(path: Path) -> None:
    columns, meta = read_columns(path)
    columns = {name: np.array(values) for name, values in columns.items()}
    columns["instances"][:8] = ord("x")
    write_columns(path, columns, meta)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
    (lambda p: p.write_bytes(b"garbage"), "not an oanet column file"),
    (lambda p: write_columns(p, {"widths": np.zeros(2, np.int32)}, {"schema": 0}), "schema 0"),
    (lambda p: write_columns(p, {**read_columns(p)[0], "segment_offsets": np.array([0, 9, 1])}, read_columns(p)[1]),
     "damaged annotation cache"),
])
def test_a_damaged_cache_is_named_and_rebuilt(split_paths, tmp_path, damage, message):
    expected = PanopticSplit(**split_paths)
    path = PanopticSplit(**split_paths, cache_dir=tmp_path / "cache").cache_file
    damage(path)
    with pytest.warns(UserWarning, match=f"{path.name}: .*{message}.*rebuilding"):
        rebuilt = PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")
    assert_same_split(expected, rebuilt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")  # repaired


def test_a_damaged_instance_record_names_the_cache(split_paths, tmp_path):
    split = PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")
    _damage_instances(split.cache_file)
    damaged = PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=f"{split.cache_file.name}: damaged instance record of image 1"):
        damaged.load_instance_masks(1)


def test_errors_name_the_json_and_leave_no_cache(split_paths, tmp_path):
    edit_json(split_paths["panoptic_json"], lambda d: d["annotations"][0]["segments_info"][1].update(id=11))
    with pytest.raises(DataError, match=r"panoptic.json: image 1: duplicate segment id\(s\) \[11\]"):
        PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")
    edit_json(split_paths["panoptic_json"], lambda d: d["annotations"][0]["segments_info"][1].update(id=12))
    edit_json(split_paths["instances_json"], lambda d: d["annotations"][0].update(category_id=7))
    with pytest.raises(DataError, match=r"instances.json: annotation 1 has category id 7, not a thing category"):
        PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*"))
    with pytest.raises(FileNotFoundError, match="nope.json: JSON file not found"):
        PanopticSplit(**{**split_paths, "panoptic_json": tmp_path / "nope.json"}, cache_dir=tmp_path / "cache")


def test_an_unwritable_cache_folder_warns_and_keeps_the_index_in_memory(split_paths, tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.warns(UserWarning, match="cannot write the annotation cache"):
        split = PanopticSplit(**split_paths, cache_dir=tmp_path / "file" / "cache")
    assert split.cache_file is None
    assert_same_split(PanopticSplit(**split_paths), split)


def test_cache_files_are_per_pair_of_jsons(tmp_path):
    a = cache_path(tmp_path, Path("x/panoptic.json"), Path("x/instances.json"))
    assert a.parent == tmp_path and a.name.startswith("panoptic-")
    assert a != cache_path(tmp_path, Path("x/panoptic.json"), None) != cache_path(tmp_path, Path("y/panoptic.json"), None)


# --------------------------------------------------------------------------------------------
# accessors


def test_images_behave_like_the_list_they_replace(split_paths):
    split = PanopticSplit(**split_paths)
    images = split.images
    assert len(images) == 2 and images[0].id == 1 and images[-1].id == 2 and images[1:] == [images[1]]
    assert [img.id for img in images] == [1, 2] and images == list(images)
    with pytest.raises(IndexError):
        images[2]
    assert split.image_info(2.0) == images[1]  # a dict would have matched 2.0 too
    for missing in (3, "1", None, [1], 2**70, 1.5):
        with pytest.raises(DataError, match=r"panoptic.json: no image with id"):
            split.image_info(missing)
    assert split.used_category_ids().tolist() == [1, 3, 7, 9]


def test_string_image_ids(split_paths, tmp_path):
    def rename(d):
        for entry in d["images"]:
            entry["id"] = f"img{entry['id']}"
        for entry in d["annotations"]:
            entry["image_id"] = f"img{entry['image_id']}"

    edit_json(split_paths["panoptic_json"], rename)
    edit_json(split_paths["instances_json"], rename)
    for cache_dir in (None, tmp_path / "cache", tmp_path / "cache"):
        split = PanopticSplit(**split_paths, cache_dir=cache_dir)
        assert [img.id for img in split.images] == ["img1", "img2"]
        assert split.annotation("img2").segment_ids.tolist() == [5, 7]
        assert len(split.instance_annotations("img1")) == 3 and split.instance_annotations("img2") == []
        with pytest.raises(DataError, match="no image with id 1"):
            split.annotation(1)


def test_annotations_are_fresh_writable_arrays(split_paths, tmp_path):
    split = PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")
    ann = split.annotation(1)
    ann.segment_ids[0] = 99
    assert split.annotation(1).segment_ids[0] == 11


def test_a_pickled_split_maps_its_cache_again(split_paths, tmp_path):
    split = PanopticSplit(**split_paths, cache_dir=tmp_path / "cache")
    blob = pickle.dumps(split)
    restored = pickle.loads(blob)
    assert restored.cache_file == split.cache_file and not restored._index.columns["widths"].flags.writeable
    assert_same_split(split, restored)
    in_memory = PanopticSplit(**split_paths)
    assert_same_split(in_memory, pickle.loads(pickle.dumps(in_memory)))


class RecordsDataset:
    """Every item: all of the split's records, pickled (the loader's default conversion keeps bytes as is)."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return pickle.dumps(records(self.split))


@pytest.mark.parametrize("context, cached", [("fork", True), ("fork", False), ("spawn", True)])
def test_forked_and_spawned_workers_see_the_same_records(split_paths, tmp_path, context, cached):
    import torch

    split = PanopticSplit(**split_paths, cache_dir=tmp_path / "cache" if cached else None)
    expected = records(split)
    workers = 2 if context == "fork" else 1  # a spawned worker imports torch again: keep it to one
    loader = torch.utils.data.DataLoader(RecordsDataset(split), batch_size=None, num_workers=workers,
                                         multiprocessing_context=context)
    for seen in loader:
        assert pickle.loads(seen) == expected


def test_split_index_without_instances(split_paths):
    split = PanopticSplit(**{**split_paths, "instances_json": None})
    assert not split.has_instances and isinstance(split._index, SplitIndex)
    with pytest.raises(DataError, match="panoptic.json: this split has no instances_json"):
        split.instance_annotations(1)


# --------------------------------------------------------------------------------------------
# ranks: one parse per node


def _run_ranks(make, nodes: int, per_node: int) -> list:
    """``once_per_node(make(rank, node))`` on ``nodes * per_node`` threads standing in for ranks."""
    import threading

    from oanet.distributed import DistContext, once_per_node

    world = nodes * per_node
    gate = threading.Barrier(world, timeout=30)
    results: list = [None] * world

    def rank_main(rank: int) -> None:
        ctx = DistContext(rank=rank, world_size=world, local_rank=rank % per_node, device=None)
        try:
            results[rank] = once_per_node(lambda: make(rank, rank // per_node), ctx, sync=gate.wait)
        except Exception as exc:  # collected for the assertions
            results[rank] = exc

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("shared_disk, builds", [(True, 1), (False, 2)])
def test_ranks_parse_once_per_node(split_paths, tmp_path, monkeypatch, shared_disk, builds):
    calls = []
    build = split_build.build_columns

    def counting_build(*args):
        calls.append(args)
        return build(*args)

    monkeypatch.setattr("oanet.data.split_index.build_columns", counting_build)
    results = _run_ranks(
        lambda rank, node: PanopticSplit(**split_paths, cache_dir=tmp_path / ("shared" if shared_disk else f"node{node}")),
        nodes=2, per_node=3,
    )
    assert len(calls) == builds
    assert all(isinstance(r, PanopticSplit) and r.cache_file is not None for r in results)
    assert_same_split(results[0], results[-1])


def test_a_failing_rank_does_not_leave_the_others_waiting(split_paths, tmp_path):
    edit_json(split_paths["panoptic_json"], lambda d: d["annotations"].pop())
    results = _run_ranks(lambda rank, node: PanopticSplit(**split_paths, cache_dir=tmp_path / "cache"), nodes=1, per_node=3)
    assert all(isinstance(r, DataError) and "image(s) without annotation" in str(r) for r in results)


def test_instance_records_rebuild_plain_values_only():
    from oanet.data.instances import read_record

    assert read_record(pickle.dumps([[1, 0, {"counts": [1, 2], "size": [1, 3]}, None]])) == [[1, 0, {"counts": [1, 2], "size": [1, 3]}, None]]
    for hostile in (pickle.dumps(os.system), pickle.dumps([Path("x")]), pickle.dumps(np.zeros(2))):
        with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
            read_record(hostile)
