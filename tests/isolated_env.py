"""A Python environment like this one minus some installed distributions, for tests of what happens without them.

Built from what is installed, not downloaded: a folder of links to every entry of site-packages except the files
of the excluded distributions (their packages and their metadata). ``python -S`` (no site-packages, no .pth
files) then puts this checkout first and that folder last on ``sys.path``, where site-packages would be. Inside
it, the excluded distributions are simply not installed: ``import`` and ``importlib.metadata`` both miss them.
"""

from __future__ import annotations

import importlib.metadata
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_BOOT = (
    "import runpy, sys\n"
    "sys.path.insert(0, {repo!r}); sys.path.append({site!r})\n"
    "module, sys.argv = sys.argv[1], sys.argv[1:]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def site_without(distributions: set[str], folder: Path) -> Path:
    """A site-packages look-alike in ``folder`` that lacks ``distributions`` (pip names)."""
    site = Path(sysconfig.get_paths()["purelib"])
    excluded: set[str] = set()
    for name in distributions:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here either
        excluded |= {Path(str(f)).parts[0] for f in files if not str(f).startswith("..")}
    folder.mkdir(parents=True, exist_ok=True)
    for entry in site.iterdir():
        if entry.name in excluded or entry.suffix == ".pth" or entry.name.startswith("__editable__"):
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def module_command(site: Path, module: str, *args: str) -> list[str]:
    """``python -m module args`` inside the environment whose site-packages is ``site``."""
    return [sys.executable, "-S", "-c", _BOOT.format(repo=str(REPO), site=str(site)), module, *args]
