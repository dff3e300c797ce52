"""The network: :class:`OANet` (a Mask R-CNN with a stuff head and the spatial ranking module),
its parts, fusion of both orders from one pass, checkpoints and weight import. Needs torch.

::

    from oanet.model import OANet, build_model
    model = build_model(cfg.model)                       # from a ModelConfig
    model = OANet(transform=..., backbone=..., rpn=..., roi_heads=..., stuff_head=..., srm=...)
"""

from oanet.model.backbone import OANetBackbone
from oanet.model.checkpoint import load_checkpoint_file, load_model_from_checkpoint
from oanet.model.fusion import fuse, panoptic_fusion
from oanet.model.oanet import OANet, build_model
from oanet.model.pretrained import load_pretrained
from oanet.model.srm import SpatialRankingModule
from oanet.model.stuff_head import StuffHead
from oanet.model.transform import PanopticTransform

__all__ = ["OANet", "build_model", "OANetBackbone", "StuffHead", "SpatialRankingModule", "PanopticTransform", "fuse",
           "panoptic_fusion", "load_model_from_checkpoint", "load_checkpoint_file", "load_pretrained"]
