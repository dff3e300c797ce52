"""OANet: an end-to-end network for panoptic segmentation (Liu et al., CVPR 2019).

Importing ``oanet`` is cheap: nothing here imports torch. The network lives in ``oanet.model``,
training and inference in ``oanet.engine``; data and evaluation code that needs no torch lives in
``oanet.data`` and ``oanet.evaluation``.
"""

__version__ = "0.1.0"
