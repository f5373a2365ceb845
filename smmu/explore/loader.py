"""The driver-spec loader: the one place where a driver name becomes a driver class (the
command line, the testing kit and replays of findings all use :func:`load_driver`).

A spec is one of

* a built-in name: ``kvm``, ``gru``, ``xpmem``, ``iommu_sva``, ``hmm_mirror``, ``pinned``
  (``drivers.BUILTIN``; any case, and the class names exported by ``drivers`` too);
* a documented broken variant: ``buggy.NAME`` (``drivers.BUGGY``, e.g. ``buggy.kvm_no_seq``);
* a driver registered by an installed package under the entry-point group ``smmu.drivers``;
* an importable ``package.module:Class`` (the current directory is importable);
* a file and class: ``path/to/file.py:Class``.

Every failure is a :class:`~smmu.base.errors.BadDriver` whose message says what to fix.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

import drivers
from smmu.base.errors import BadDriver
from smmu.notifier import MMUNotifier
from smmu.runtime.task import traceback_frames, user_site

BUGGY_PREFIX = "buggy."
#: modules of driver files loaded by path are named this plus a digest of the path
FILE_MODULE_PREFIX = "_smmu_user_driver_"
ENTRY_POINT_GROUP = "smmu.drivers"


def builtin_drivers() -> dict:
    """The reference drivers by command-line name (``drivers.BUILTIN``)."""
    return dict(drivers.BUILTIN)


def buggy_drivers() -> dict:
    """The documented broken drivers by name, without the ``buggy.`` prefix."""
    return dict(drivers.BUGGY)


def entry_point_drivers() -> dict:
    """Drivers installed packages register under ``smmu.drivers``: name -> entry point."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def driver_label(cls, spec: str | None = None) -> str:
    """The name to show for ``cls``: its built-in or ``buggy.`` name, else ``spec``, else
    ``module:QualName``."""
    for n, c in builtin_drivers().items():
        if c is cls:
            return n
    for n, c in buggy_drivers().items():
        if c is cls:
            return BUGGY_PREFIX + n
    return spec or f"{cls.__module__}:{cls.__qualname__}"


def load_driver(spec: str):
    """The driver class ``spec`` names (see the module docstring)."""
    if not isinstance(spec, str) or not spec:
        raise BadDriver("DRIVER is empty: give a built-in name (see `smmu drivers`), "
                        "package.module:Class or path/to/file.py:Class" if spec == "" else
                        f"a driver spec is a string, got {spec!r}")
    if ":" not in spec:
        return _named(spec)
    where, _, qual = spec.rpartition(":")
    if not qual or not where:
        raise BadDriver(f"bad driver {spec!r}: write package.module:Class or "
                        "path/to/file.py:Class")
    module = _file_module(where) if (where.endswith(".py") or "/" in where or "\\" in where) \
        else _import_module(where)
    obj = module
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            classes = sorted(n for n, v in vars(module).items()
                             if isinstance(v, type) and issubclass(v, MMUNotifier)
                             and v is not MMUNotifier)
            hint = f" (drivers in it: {', '.join(classes)})" if classes else ""
            raise BadDriver(f"{where!r} has no class {qual!r}{hint}")
    return _check_class(obj, spec)


def portable_spec(spec: str) -> str:
    """``spec`` as another process (a worker of a cluster) resolves it to the same class: a
    ``path/to/file.py:Class`` with the file's absolute path; other specs unchanged."""
    if isinstance(spec, str) and ":" in spec:
        where, _, qual = spec.rpartition(":")
        if where.endswith(".py") or "/" in where or "\\" in where:
            return f"{Path(where).resolve()}:{qual}"
    return spec


def _named(spec: str):
    """A built-in, ``buggy.`` or entry-point name."""
    builtin, buggy = builtin_drivers(), buggy_drivers()
    if spec in builtin:
        return builtin[spec]
    if spec.lower() in builtin:
        return builtin[spec.lower()]
    if spec.startswith(BUGGY_PREFIX):
        name = spec[len(BUGGY_PREFIX):]
        if name in buggy:
            return buggy[name]
        raise BadDriver(f"no buggy driver {name!r}: choose one of "
                        f"{', '.join(BUGGY_PREFIX + n for n in sorted(buggy))}")
    for k in dir(drivers):                       # a class the drivers package exports
        if k.lower() == spec.lower() and isinstance(getattr(drivers, k), type):
            return _check_class(getattr(drivers, k), spec)
    eps = entry_point_drivers()
    if spec in eps:
        try:
            cls = eps[spec].load()
        except Exception as e:
            raise BadDriver(f"entry point {spec!r} ({eps[spec].value}) failed to load: "
                            f"{type(e).__name__}: {e}") from None
        return _check_class(cls, spec)
    known = sorted(builtin) + [BUGGY_PREFIX + n for n in sorted(buggy)] + sorted(eps)
    raise BadDriver(f"unknown driver {spec!r}: use one of {', '.join(known)}, "
                    "package.module:Class or path/to/file.py:Class")


def _file_module(where: str):
    """Execute ``where`` (a Python file) as a module of its own. Its name is derived from the
    file's resolved path, so it is the same in every process and never shadows another."""
    path = Path(where)
    if not path.is_file():
        raise BadDriver(f"driver file {where!r} not found (looked in {Path.cwd()})")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    modname = f"{FILE_MODULE_PREFIX}{digest}"
    # the file's folder is importable while it loads, as when Python runs it as a script:
    # `from mybase import MyBaseDriver` finds mybase.py next to it
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        mod_spec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[modname] = module
        mod_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(modname, None)
        where_ = user_site(traceback_frames(e))
        raise BadDriver(f"cannot load {where!r}: {type(e).__name__}: {e} (at {where_})") \
            from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return module


def _import_module(where: str):
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        raise BadDriver(f"module {where!r} not found ({e}): check the name and that it is "
                        "importable (installed, or under the current directory)") from None
    except Exception as e:
        raise BadDriver(f"importing {where!r} failed: {type(e).__name__}: {e}") from None


def _check_class(cls, spec):
    if not isinstance(cls, type) or not issubclass(cls, MMUNotifier):
        raise BadDriver(f"{spec!r} is not an MMUNotifier subclass (got {cls!r}): a driver is a "
                        "class derived from smmu.MMUNotifier")
    return cls
