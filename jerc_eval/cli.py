"""The ``jerc-eval`` command line. Every project error becomes one line on stderr and its own exit code."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from .errors import EXIT_CODES, JercError, UsageError

KIND_ALIASES = {"encoder": "encoders", "suite": "suites", "corruption-suites": "suites", "dataset": "datasets",
                "probe": "probes", "reporter": "reporters"}


def _global_flags(parser: argparse.ArgumentParser, after: bool) -> None:
    """``--debug``, ``--plugin`` and ``--strict-plugins``: on the top-level parser, and again on every subcommand
    (``after``), so they work before and after it. After it they default to SUPPRESS (or go to ``plugin_after``),
    so a subcommand never resets what was given before it."""
    hide = dict(default=argparse.SUPPRESS) if after else {}
    parser.add_argument("--debug", action="store_true", help="show tracebacks (the exit code stays the error's)",
                        **hide)
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE", help="load a one-file plugin",
                        **({"dest": "plugin_after"} if after else {}))
    parser.add_argument("--strict-plugins", action="store_true", help="a plugin that fails to load is an error "
                        "(for CI)", **(hide if after else {"default": None}))


class _Sub:
    """``add_parser`` that also gives every subcommand the global flags."""

    def __init__(self, sub: Any):
        self.sub = sub

    def add_parser(self, *args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        p = self.sub.add_parser(*args, **kwargs)
        _global_flags(p, after=True)
        return p


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="evaluate encoders under a corruption suite (defaults: the embedded zoo)",
                       description="Evaluate encoders under corruptions. Defaults: the reference zoo (MAE vs DINO "
                                   "vs BYOL) on the embedded PhotoDigits dataset, ImageNet-C's 15 corruptions x 5 "
                                   "severities. Flags override --config.")
    p.add_argument("--config", metavar="FILE", help="TOML or YAML file with run keys (flags win)")
    p.add_argument("-e", "--encoder", action="append", metavar="NAME",
                   help="encoder to evaluate (repeat or comma-separate); see `jerc-eval list encoders`. ALIAS=NAME "
                        "names it in every row and report, so one adapter can appear twice "
                        "(-e new=mae -o new.checkpoint a.pth -e old=mae -o old.checkpoint b.pth)")
    p.add_argument("-o", "--option", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                   help="typed encoder option; with several encoders use ENCODER.KEY")
    p.add_argument("--dataset", metavar="NAME", help="dataset (default photodigits)")
    p.add_argument("-d", "--dataset-option", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[])
    p.add_argument("--suite", metavar="NAME", help="corruption suite (default imagenet-c)")
    p.add_argument("-S", "--suite-option", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                   help="suite option, e.g. -S root ./CIFAR-10-C for --suite cifar10-c")
    p.add_argument("--backend", help="corruption backend: reference (imagecorruptions) or fast (batched torch)")
    p.add_argument("-c", "--corruptions", metavar="LIST", help="comma-separated corruption or family names "
                   "(noise, blur, weather, digital, extra)")
    p.add_argument("--extra", action="store_true", default=None, help="add the 4 extra corruptions")
    p.add_argument("-s", "--severities", metavar="LIST", help="comma-separated severities in 1..5")
    p.add_argument("--probe", metavar="NAME", help="probe (default logreg)")
    p.add_argument("-p", "--probe-option", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[])
    p.add_argument("--probe-fit-on", choices=("clean", "matched"),
                   help="fit the probe on clean train features (default) or per cell on matched corrupted train")
    p.add_argument("--reporter", action="append", metavar="NAME", help="reporters (default json, markdown)")
    p.add_argument("--seed", type=int, help="run seed: every random draw derives from it (default 0)")
    p.add_argument("--out", metavar="DIR", help="output folder (default jerc-eval-results)")
    p.add_argument("--workers", type=int, help="corruption processes (default: all cores)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--cache-dir", metavar="DIR")
    p.add_argument("--no-cache", action="store_true", default=None, help="recompute every feature")
    p.add_argument("--no-floors", dest="floors", action="store_false", default=None,
                   help="skip the random-init floor of each encoder")
    p.add_argument("--no-alignment", dest="alignment", action="store_false", default=None,
                   help="skip the spectra/alignment estimate behind the theory side of the recommendation")
    p.add_argument("--quick", action="store_true", default=None,
                   help="a quick look: 5 corruptions at severities 1, 3, 5 and (PhotoDigits) 2,000 train / 500 "
                        "test images; every output says it is a subset")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="jerc-eval", description="How robust is a pretrained self-supervised "
                                     "image encoder, and why? Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()))
    parser.add_argument("--version", action="version", version=f"jerc-eval {__version__}")
    _global_flags(parser, after=False)
    sub = _Sub(parser.add_subparsers(dest="command", metavar="COMMAND"))
    _add_run(sub)
    sub.add_parser("plugins", help="installed plugins: name, version, hooks (JSON)")
    lp = sub.add_parser("list", help="registered encoders, suites, datasets, probes or reporters")
    lp.add_argument("kind", help="encoders | suites | datasets | probes | reporters | corruptions")
    ic = sub.add_parser("inspect-checkpoint", help="what a checkpoint file is and which adapter loads it")
    ic.add_argument("file", metavar="FILE")
    ic.add_argument("--json", action="store_true", help="print the report as JSON")
    gp = sub.add_parser("gate", help="pass or fail a release: thresholds and a baseline over results.json",
                        description="Gate a release on a results document. Exit 0 pass, 1 gate failed, 2 usage "
                                    "error, 3 internal error. See docs/gate.md for policy keys.")
    gp.add_argument("results", metavar="RESULTS", help="results.json written by `jerc-eval run`")
    gp.add_argument("--baseline", metavar="RESULTS", help="results of the previous release to compare with")
    gp.add_argument("--policy", metavar="TOML", help="thresholds (gate.toml)")
    gp.add_argument("--junit", metavar="FILE", help="write JUnit XML for CI job pages")
    gp.add_argument("--summary", metavar="FILE", help="write a Markdown summary")
    gp.add_argument("--json", action="store_true", help="print the verdict and every check as JSON (docs/gate.md)")
    gp.add_argument("--set", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                    help="a policy key that wins over the file, e.g. --set min_clean_accuracy 0.8")
    cp = sub.add_parser("corruptions", help="corruption tools")
    cp_sub = _Sub(cp.add_subparsers(dest="corruptions_command", metavar="COMMAND"))
    cc = cp_sub.add_parser("compare", help="fidelity of the fast backend against the reference (table + JSON); "
                                           "--params cifar10 checks the CIFAR-10-C table at 32 px", add_help=False)
    cc.add_argument("rest", nargs=argparse.REMAINDER)
    bp = sub.add_parser("compare", help="one leaderboard across results.json files (clean, mean corrupted, mCE, "
                        "Drop per family)")
    bp.add_argument("results", nargs="+", metavar="RESULTS", help="results.json files of comparable runs")
    bp.add_argument("--html", metavar="FILE", help="write a self-contained HTML board")
    bp.add_argument("--csv", metavar="FILE", help="write the board as CSV")
    ca = sub.add_parser("cache", help="the feature/probe/dataset cache: info, verify, clear",
                        description="info: entries and bytes per kind; verify: read and check every entry, remove "
                                    "what fails (and stray temp files); clear: remove everything (or one --kind)")
    ca.add_argument("cache_command", choices=("info", "verify", "clear"), metavar="info|verify|clear")
    ca.add_argument("--cache-dir", metavar="DIR", help="cache root (default $JERC_EVAL_CACHE or ~/.cache/jerc-eval)")
    ca.add_argument("--kind", choices=("features", "probes", "alignment", "datasets"), help="clear: only this kind")
    ca.add_argument("--json", action="store_true", help="print the report as JSON")
    th = sub.add_parser("theory", help="the paper's linear theory")
    th_sub = _Sub(th.add_subparsers(dest="theory_command", metavar="COMMAND"))
    rp = th_sub.add_parser("reproduce", help="regenerate the paper's Figure 3 protocol offline (PNG + JSON)")
    rp.add_argument("--out", default="jerc-eval-theory", metavar="DIR")
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--fast", action="store_true", help="a tiny sweep (seconds)")
    from .zoo.lab import __doc__ as lab_doc
    from .zoo.lab import add_arguments as add_lab_arguments

    lb = sub.add_parser("lab", help="pretraining lab: the zoo methods pretrained on corrupted data, the paper's "
                        "Table 1 protocol with intervals (lab.json + lab.md)", description=lab_doc,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lab_arguments(lb)
    return parser


def _run_config(args: argparse.Namespace) -> Any:
    from .config import RunConfig, encoder_aliases, from_mapping, load_file, split_encoder_options

    cfg = from_mapping(load_file(args.config), source=args.config) if args.config else RunConfig()
    flags: dict[str, Any] = {}
    if args.encoder:
        flags["encoders"] = [e.strip() for item in args.encoder for e in item.split(",") if e.strip()]
    simple = {"dataset": args.dataset, "suite": args.suite, "backend": args.backend, "probe": args.probe, "probe_fit_on": args.probe_fit_on, "seed": args.seed, "out": args.out,
              "workers": args.workers, "batch_size": args.batch_size, "device": args.device,
              "cache_dir": args.cache_dir, "no_cache": args.no_cache, "floors": args.floors, "alignment": args.alignment, "extra": args.extra, "quick": args.quick,
              "corruptions": args.corruptions, "severities": args.severities, "reporters": args.reporter}
    flags.update({k: v for k, v in simple.items() if v is not None})
    cfg = from_mapping(flags, base=cfg, source="flags")
    aliases = list(encoder_aliases(cfg.encoders))  # -e new=mae: options go to -o new.KEY
    for enc, opts in split_encoder_options([tuple(o) for o in args.option], aliases).items():
        cfg.encoder_options.setdefault(enc, {}).update(opts)
    cfg.dataset_options.update(dict(args.dataset_option))
    cfg.probe_options.update(dict(args.probe_option))
    cfg.suite_options.update(dict(args.suite_option))
    return cfg


def _list(host: Any, kind: str) -> None:
    kind = KIND_ALIASES.get(kind, kind)
    if kind == "corruptions":
        for entry in host.registry("suites"):
            required = [k for k, o in entry.obj.options.items() if o.required]
            if required:  # a pre-rendered suite: its corruptions are whatever its files hold
                flags = " ".join(f"-S {k} ..." for k in required)
                print(f"{entry.name}  (the corruptions found under its files; needs {flags})")
                continue
            for fam, names in entry.obj().families().items():
                print(f"{entry.name}  {fam:<8} {', '.join(names)}")
        return
    if kind not in host.registries:
        from .registry import unknown_message

        raise UsageError(unknown_message("kind", kind, sorted(host.registries) + ["corruptions"]))
    for entry in host.registry(kind):
        print(f"{entry.name:<14} {entry.plugin:<36} {getattr(entry.obj, 'description', '')}")


def _number_or_text(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def _cache_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import cache

    root = Path(args.cache_dir) if args.cache_dir else cache.default_root()
    if root.exists() and not root.is_dir():
        raise UsageError(f"cache root {str(root)!r} is a file; pass a folder with --cache-dir")
    if args.cache_command == "info":
        doc = cache.scan(root)
        if args.json:
            print(json.dumps(doc, indent=2))
            return 0
        print(f"cache {root}" + ("" if root.is_dir() else " (does not exist yet)"))
        for kind in cache.KINDS:
            k = doc["kinds"].get(kind, {"entries": 0, "bytes": 0})
            print(f"  {kind:<10} {k['entries']:>6} entries  {k['bytes'] / 2**20:9.1f} MiB")
        if doc["tmp_files"] or doc["other_files"]:
            print(f"  {doc['tmp_files']} temporary file(s) (swept by the next run or `cache verify`), "
                  f"{doc['other_files']} file(s) of another layout, {doc['other_bytes'] / 2**20:.1f} MiB "
                  f"(an older jerc-eval; `cache clear` removes them)")
        return 0
    if args.cache_command == "verify":
        doc = cache.verify(root)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(f"cache {root}: {doc['checked']} entries checked, {doc['ok']} sound, {len(doc['failed'])} "
                  f"removed (recomputed when next needed), {doc['removed_tmp']} temporary file(s) removed")
            for f in doc["failed"][:20]:
                print(f"  removed {f['file']}: {f['why']}")
        return 0
    n = cache.clear(root, args.kind)
    print(json.dumps({"root": str(root), "removed_files": n}) if args.json
          else f"cache {root}: removed {n} file(s){' of kind ' + args.kind if args.kind else ''}")
    return 0


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .plugins import create_host

    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "theory":
        if args.theory_command != "reproduce":
            raise UsageError("use `jerc-eval theory reproduce`")
        from .theory.reproduce import main as reproduce
        from .checks import check_writable_dir

        check_writable_dir(args.out, "--out", "figure")

        out = reproduce(args.out, seed=args.seed, fast=args.fast)
        print(f"wrote {args.out}/figure3.png and {args.out}/figure3.json" if isinstance(out, dict) else out)
        return 0
    if args.command == "inspect-checkpoint":
        from .inspect_checkpoint import format_report, inspect

        info = inspect(args.file)
        print(json.dumps(info, indent=2, default=str) if args.json else format_report(info))
        return 0
    if args.command == "corruptions":
        if args.corruptions_command != "compare":
            raise UsageError("use `jerc-eval corruptions compare [--params imagenet|cifar10 --size N --n N "
                             "--repeats N --out FILE]`")
        from .corruptions.fidelity import main as compare

        rows = compare(args.rest)
        return 0 if all(r.get("passed", True) and r.get("replay_passed", True) and r.get("torch_path_passed", True)
                        for r in rows) else 1
    if args.command == "cache":
        return _cache_command(args)
    if args.command == "compare":
        from .board import compare_main

        return compare_main(args.results, args.html, args.csv)
    if args.command == "lab":
        from .zoo.lab import run_from_args
        from .checks import check_writable_dir

        check_writable_dir(args.out, "--out", "lab report")

        return run_from_args(args)
    if args.command == "gate":
        from .gate import gate_main

        overrides = {k: _number_or_text(v) for k, v in args.set}
        return gate_main(args.results, args.baseline, args.policy, args.junit, args.summary, overrides or None,
                         as_json=args.json)
    host = create_host(plugin_files=args.plugin, strict=args.strict_plugins)
    if args.command == "plugins":
        print(json.dumps(host.plugin_info(), indent=2))
        return 0
    if args.command == "list":
        _list(host, args.kind)
        return 0
    from .pipeline import run

    cfg = _run_config(args)
    try:
        run(cfg, host=host, progress=not args.quiet)
    except (JercError, KeyboardInterrupt, OSError):
        raise
    except Exception as exc:  # raised inside a third-party plugin's code: its error (exit 7), naming it
        plugin = host.plugin_raising(exc)
        if plugin is None:
            raise
        from .errors import PluginError
        from .plugins import hook_failure

        raise PluginError(hook_failure(plugin, "the run", exc)) from exc
    return 0


GLOBAL_FLAGS = ("--debug", "--strict-plugins")


def _split_compare(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """``[globals] corruptions compare REST``: (what argparse parses, REST for the fidelity harness untouched)."""
    i = 0
    while i < len(argv) and (argv[i] in GLOBAL_FLAGS or argv[i] == "--plugin"):
        i += 2 if argv[i] == "--plugin" else 1
    if argv[i:i + 2] != ["corruptions", "compare"]:
        return None
    rest = argv[i + 2:]
    head = argv[:i + 2] + [a for a in rest if a in GLOBAL_FLAGS]
    return head, [a for a in rest if a not in GLOBAL_FLAGS]


from .engine import Terminated  # noqa: E402 - SIGTERM, ended like Ctrl-C


@contextmanager
def _quiet_signals() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM :class:`Terminated` in this process; a forked worker (corruption
    pool, render) that receives either exits at once without a traceback. Restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    main_pid = os.getpid()
    from .engine import interrupted

    interrupted.clear()

    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        from .engine import note_signal

        note_signal(signum)  # pools are abandoned, not terminated (a dead worker may hold their lock)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stdout_closed() -> int:
    """The reader of stdout went away (``jerc-eval plugins | head -1``): end quietly with 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush then writes nowhere
    except (OSError, ValueError, AttributeError):
        pass
    return 0


def _error(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(message, file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    compare = _split_compare(argv)
    if compare is not None:  # its own flags go to the fidelity harness untouched
        args = parser.parse_args(compare[0])
        args.rest = compare[1]
    else:
        args = parser.parse_args(argv)
    args.plugin = list(args.plugin) + list(getattr(args, "plugin_after", []))
    if not args.debug:
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    from .checks import no_space_message

    try:
        with _quiet_signals():
            code = dispatch(args, parser)
            from .engine import raise_if_interrupted

            raise_if_interrupted()  # a signal whose raise was swallowed (see engine.note_signal)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return code
    except BrokenPipeError:
        return _stdout_closed()
    except JercError as exc:
        return _error(args, f"error: {exc}", exc.exit_code)
    except Terminated:
        return _error(args, "error: terminated (SIGTERM); nothing was written", 143)
    except KeyboardInterrupt:
        return _error(args, "error: interrupted; nothing was written", 130)
    except OSError as exc:
        full = no_space_message(exc)
        if full is not None:
            return _error(args, f"error: {full}", UsageError.exit_code)
        return _internal(args, exc)
    except Exception as exc:  # a bug: one line unless --debug
        return _internal(args, exc)


def _internal(args: argparse.Namespace, exc: BaseException) -> int:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return _error(args, f"internal error: {type(exc).__name__}: {first} (rerun with --debug and report it)", 3)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
