"""Training: the loop (:func:`train`), one optimisation step apart from the hooks (:class:`TrainStep`,
:class:`LogHook`, :class:`CheckpointHook`), the global batch sampler, the learning-rate schedule and
the standalone SRM training of the ablations. Needs torch.

::

    from oanet.config import load_config
    from oanet.train import train
    train(load_config("coco_r50", ["solver.max_iter=1000"]))
"""

from oanet.train.hooks import CheckpointHook, LogHook
from oanet.train.sampler import GlobalBatchSampler
from oanet.train.schedule import lr_at
from oanet.train.step import NonFiniteLossError, TrainStep
from oanet.train.trainer import build_optimizer, build_train_loader, train

__all__ = ["train", "TrainStep", "NonFiniteLossError", "LogHook", "CheckpointHook", "GlobalBatchSampler", "lr_at",
           "build_optimizer", "build_train_loader"]
