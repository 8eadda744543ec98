"""Plugin discovery: built-ins, installed entry points (group ``jerc_eval``) and one-file plugins.

Environment:
- ``JERC_EVAL_PLUGINS``: comma-separated allow-list of entry-point names to load (unset: all installed;
  empty string: none). Built-ins always load.
- ``JERC_EVAL_PLUGIN_FILES``: ``os.pathsep``-separated paths of one-file plugins (``--plugin FILE`` adds more).
- ``JERC_EVAL_STRICT_PLUGINS=1``: a plugin that fails to import is an error instead of a warning (for CI).
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import Registry

ENTRY_POINT_GROUP = "jerc_eval"
DEFAULT_PLUGINS = (
    "jerc_eval.default_plugins.encoders",
    "jerc_eval.default_plugins.suites",
    "jerc_eval.default_plugins.prerendered",
    "jerc_eval.default_plugins.datasets",
    "jerc_eval.default_plugins.probes",
    "jerc_eval.default_plugins.reporters",
    "jerc_eval.default_plugins.recommend",
    "jerc_eval.default_plugins.theory_recommend",
)
KINDS = {
    "encoders": "register_encoders",
    "suites": "register_corruption_suites",
    "datasets": "register_datasets",
    "probes": "register_probes",
    "reporters": "register_reporters",
}
SINGULAR = {"encoders": "encoder", "suites": "corruption suite", "datasets": "dataset", "probes": "probe",
            "reporters": "reporter"}


class PluginLoadWarning(UserWarning):
    """A third-party plugin was skipped because it failed to load."""


@dataclass
class Host:
    """The plugin manager plus the registries its plugins filled."""

    pm: pluggy.PluginManager
    registries: dict[str, Registry]
    versions: dict[str, str] = field(default_factory=dict)  # plugin name -> version
    skipped: dict[str, str] = field(default_factory=dict)  # plugin name -> reason

    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def plugin_raising(self, exc: BaseException) -> str | None:
        """The third-party plugin (entry point or file; never a built-in) whose code raised ``exc``: the one
        that owns the innermost traceback frame in a plugin's file. None when no plugin's code is on the stack."""
        files: dict[str, str] = {}
        for name, plugin in self.pm.list_name_plugin():
            if name in DEFAULT_PLUGINS or name.startswith("jerc_eval."):
                continue
            path = getattr(plugin, "__file__", None)
            if path:
                files[os.path.realpath(path)] = name
        if not files:
            return None
        found, tb = None, exc.__traceback__
        while tb is not None:
            hit = files.get(os.path.realpath(tb.tb_frame.f_code.co_filename))
            found = hit or found
            tb = tb.tb_next
        return found

    def plugin_info(self) -> list[dict[str, Any]]:
        """Name, version and implemented hooks of every registered plugin (``jerc-eval plugins``)."""
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda t: t[0]):
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            out.append({"name": name, "version": self.versions.get(name, ""), "hooks": hooks})
        return out


def _allow_list() -> set[str] | None:
    raw = os.environ.get("JERC_EVAL_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _strict(strict: bool | None) -> bool:
    if strict is not None:
        return strict
    return os.environ.get("JERC_EVAL_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def _fail(name: str, exc: BaseException, strict: bool, skipped: dict[str, str]) -> None:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if strict:
        raise PluginError(f"plugin {name!r} failed to load ({reason}); fix or uninstall it, "
                          f"or leave it out of JERC_EVAL_PLUGINS") from exc
    skipped[name] = reason
    warnings.warn(f"jerc-eval: skipped plugin {name!r}: {reason}", PluginLoadWarning, stacklevel=3)


def hook_failure(plugin: str, where: str, exc: BaseException) -> str:
    """One line: which plugin raised what, where, and the fix."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    fix = ("fix it or drop --plugin " + plugin[5:] if plugin.startswith("file:")
           else "fix or uninstall it, or leave it out of JERC_EVAL_PLUGINS")
    return f"plugin {plugin!r} raised in {where} ({reason}); {fix}"


def import_file(path: Path, prefix: str) -> ModuleType:
    """Import a Python file as module ``<prefix>_<stem>`` (registered in ``sys.modules``)."""
    mod_name = f"{prefix}_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def load_file_plugin(path: str | Path) -> ModuleType:
    """Import a one-file plugin from a path (its hooks are module-level ``@hookimpl`` functions)."""
    path = Path(path)
    if path.is_dir():
        raise PluginError(f"plugin file {str(path)!r} is a folder; pass the plugin's .py file to --plugin")
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist; check the path given to --plugin")
    return import_file(path, "jerc_eval_file_plugin")


def _register_plugin(pm: pluggy.PluginManager, module: Any, name: str) -> None:
    try:
        pm.register(module, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} has an invalid hook implementation: {exc}") from exc


def _check_pending(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}. Hook names are: {', '.join(sorted(KINDS.values()) + ['recommend'])}") from exc


def _load_entry_points(pm: pluggy.PluginManager, host: Host, strict: bool) -> None:
    allow = _allow_list()
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if allow is not None and ep.name not in allow:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the tool down
            _fail(ep.name, exc, strict, host.skipped)
            continue
        _register_plugin(pm, module, ep.name)
        host.versions[ep.name] = ep.dist.version if ep.dist else ""


def _fill_registries(host: Host) -> None:
    for kind, hook_name in KINDS.items():
        registry = host.registries[kind]
        hook = getattr(host.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order: built-ins first
            def register(obj: Any, name: str | None = None, aliases: tuple[str, ...] = (),
                         _plugin: str = impl.plugin_name, _reg: Registry = registry) -> None:
                _reg.register(obj, name=name, aliases=tuple(aliases), plugin=_plugin)
            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # a plugin's hook that raises is the plugin's fault: exit 7, naming it
                raise PluginError(hook_failure(impl.plugin_name, hook_name, exc)) from exc


def create_host(plugin_files: list[str] | tuple[str, ...] = (), strict: bool | None = None,
                entry_points: bool = True, extra_modules: tuple[Any, ...] = ()) -> Host:
    """Build a plugin manager with built-ins, entry points and file plugins, and fill the registries."""
    from . import __version__

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    host = Host(pm=pm, registries={k: Registry(SINGULAR[k]) for k in KINDS})
    for mod_name in DEFAULT_PLUGINS:
        _register_plugin(pm, importlib.import_module(mod_name), mod_name)
        host.versions[mod_name] = __version__
    strict_flag = _strict(strict)
    if entry_points:
        _load_entry_points(pm, host, strict_flag)
    env_files = [p for p in os.environ.get("JERC_EVAL_PLUGIN_FILES", "").split(os.pathsep) if p]
    for path in [*env_files, *plugin_files]:
        try:
            module = load_file_plugin(path)
        except PluginError:
            raise
        except Exception as exc:
            _fail(str(path), exc, strict_flag, host.skipped)
            continue
        _register_plugin(pm, module, f"file:{path}")
        host.versions[f"file:{path}"] = getattr(module, "__version__", "")
    for module in extra_modules:
        _register_plugin(pm, module, getattr(module, "__name__", repr(module)))
    _check_pending(pm)
    _fill_registries(host)
    return host
