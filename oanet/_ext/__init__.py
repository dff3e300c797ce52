"""Optional C speedups, built from speedups.c at install time where a C compiler is present.

Callers read ``oanet._ext.speedups`` when they run (not at import), so setting it to None switches every
user to the pure numpy / pyspng / Pillow path at once: the tests check both paths that way. Without the
extension oanet gives the same results, only slower.
"""

try:
    from oanet._ext import _speedups as speedups
except ImportError:  # built without a compiler (setup.py marks the extension optional)
    speedups = None
