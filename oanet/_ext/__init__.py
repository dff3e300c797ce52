"""Optional C speedups, built from speedups.c at install time where a C compiler is present.

Callers read ``oanet._ext.speedups`` when they run (not at import), so setting it to None switches every
user to the pure numpy / pyspng / Pillow path at once: the tests check both paths that way. Without the
extension oanet gives the same results, only slower.
"""

REQUIRED = ("scanlines_to_ids", "pair_counts", "pair_stats")  # what the Python side calls

try:
    from oanet._ext import _speedups as speedups
except ImportError:  # built without a compiler (setup.py marks the extension optional)
    speedups = None
else:
    if not all(hasattr(speedups, name) for name in REQUIRED):  # an older build left in a checkout
        import warnings

        warnings.warn(
            f"{speedups.__file__} is an older build of oanet/_ext/speedups.c: rebuild it (pip install -e . "
            "or python setup.py build_ext --inplace); until then oanet uses its slower pure path",
            RuntimeWarning,
            stacklevel=2,
        )
        speedups = None
