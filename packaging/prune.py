"""Remove files from a PyInstaller analysis, together with the shared libraries only they needed.

PyInstaller collects a library's dependencies during the analysis; dropping the library afterwards
(a Qt plugin, an extension that can never load) would leave its dependencies behind. Used by
liverview.spec; a plain module so the spec stays declarative.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import PurePosixPath

from PyInstaller.depend.bindepend import get_imports

Entry = tuple[str, str, str]  # PyInstaller TOC entry: (destination, source, typecode)


def _dest(entry: Entry) -> PurePosixPath:
    return PurePosixPath(entry[0].replace("\\", "/"))


def _is_dependency_copy(entry: Entry) -> bool:
    """A library copied in only because something needed it: PyInstaller puts those beside the
    executable, wheels vendor theirs in `<name>.libs/` (auditwheel, delvewheel)."""
    parent = _dest(entry).parent
    return entry[2] == "BINARY" and (parent == PurePosixPath(".") or parent.name.endswith(".libs"))


def _needs(entries: Iterable[Entry]) -> set[str]:
    """File names of every library the entries load at link time (ldd on Linux: transitively)."""
    names: set[str] = set()
    for entry in entries:
        if entry[2] in ("BINARY", "EXTENSION"):
            names.update(PurePosixPath(name.replace("\\", "/")).name for name, _ in get_imports(entry[1]))
    return names


def drop(binaries: list[Entry], datas: list[Entry],
         patterns: Iterable[str]) -> tuple[list[Entry], list[Entry], list[str]]:
    """(binaries, datas) without the entries whose destination matches a pattern and without the
    dependency copies only those needed; plus the destinations removed."""
    patterns = list(patterns)

    def matches(entry: Entry) -> bool:
        return any(fnmatch.fnmatch(str(_dest(entry)), pattern) for pattern in patterns)

    dropped = [e for e in binaries if matches(e)]
    kept = [e for e in binaries if not matches(e)]
    roots = [e for e in kept if not _is_dependency_copy(e)]
    orphaned_names = _needs(dropped) - _needs(roots)
    orphans = {str(_dest(e)) for e in kept if _is_dependency_copy(e) and _dest(e).name in orphaned_names}
    gone = orphans | {str(_dest(e)) for e in dropped}

    def stays(entry: Entry) -> bool:
        # A SYMLINK entry (PyInstaller lists them among the data files) names its target as source.
        dangling = entry[2] == "SYMLINK" and entry[1].replace("\\", "/") in gone
        return not (matches(entry) or str(_dest(entry)) in orphans or dangling)

    removed = sorted({str(_dest(e)) for e in binaries + datas if not stays(e)})
    return [e for e in binaries if stays(e)], [e for e in datas if stays(e)], removed
