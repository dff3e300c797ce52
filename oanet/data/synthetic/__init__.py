"""The built-in occlusion benchmark: a synthetic dataset in COCO panoptic layout. No torch here.

Every image is a background of 2-4 textured stuff regions with 3-7 thing instances on top (plus, in
some images, a crowd region). Thing classes have distinct silhouettes and textures; who lies on top
is decided by a *depth order between classes* that neither "higher detection score on top" (the
frequent class on top) nor "smaller on top" reproduces, with a few context-dependent and random
exceptions. That is the situation of the paper's person-and-tie example (§3.2, Fig. 7): the frequent
person class would be pasted over the tie it wears.

Outputs (see docs/synthetic.md)::

    DIR/images/{train,val}/<id>.jpg
    DIR/annotations/panoptic_{train,val}.json + panoptic_{train,val}/<id>.png   (COCO panoptic)
    DIR/annotations/instances_{train,val}.json                                  (COCO instances,
        amodal and overlapping RLE masks; extra per-annotation keys ``segment_id`` = the id of the
        instance's segment in the panoptic PNG and ``depth`` = paint rank, 0 = farthest)

Each image is drawn from its own generator seeded by (seed, split, index), so the bytes written do
not depend on the number of worker processes.

Modules: ``classes`` (classes, depth rules), ``geometry`` (silhouettes), ``rendering`` (textures,
painting), ``scene`` (instances, depth, visibility), ``image`` (one image: pixels, segments,
annotations), ``writer`` (the dataset on disk). How much the pasting order matters on it is measured
by :mod:`order_experiment`.
"""

from oanet.data.synthetic.classes import SPLITS, STUFF, THING_IDS, THINGS, StuffClass, ThingClass, categories
from oanet.data.synthetic.image import render_image
from oanet.data.synthetic.writer import (
    DEFAULT_SEED,
    DEFAULT_SIZE,
    DEFAULT_TRAIN,
    DEFAULT_VAL,
    GENERATOR_VERSION,
    MAX_SIZE,
    MIN_SIZE,
    generate_dataset,
    split_paths,
    validate_arguments,
)

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_SIZE",
    "DEFAULT_TRAIN",
    "DEFAULT_VAL",
    "GENERATOR_VERSION",
    "MAX_SIZE",
    "MIN_SIZE",
    "SPLITS",
    "STUFF",
    "THINGS",
    "THING_IDS",
    "StuffClass",
    "ThingClass",
    "categories",
    "generate_dataset",
    "render_image",
    "split_paths",
    "validate_arguments",
]
