"""The presets that ship inside the package (``oanet/configs/*.yaml``; the checkout's ``configs/`` links there)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def preset_dirs() -> list[Path]:
    """Package data (``oanet/configs``), then the checkout's ``configs/``."""
    dirs = []
    try:
        dirs.append(Path(str(resources.files("oanet") / "configs")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - zipped or unusual installs
        pass
    dirs.append(Path(__file__).resolve().parents[1] / "configs")
    return dirs


def preset_names() -> list[str]:
    """The shipped presets by the name ``--config`` takes (``coco_r50``, ``ablations/srm_gcn7``...)."""
    for folder in preset_dirs():
        if folder.is_dir():
            return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))
    return []


def find_preset(name: str) -> Path:
    """The preset shipped with oanet of file name ``name`` (``synthetic_cpu.yaml``)."""
    candidates = [folder / name for folder in preset_dirs()]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"preset {name} not found (looked in {', '.join(str(c.parent) for c in candidates)})")
