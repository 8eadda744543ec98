"""The run pipeline, in the order it happens:

1. resolve every name and option (no compute: a typo fails in well under a second);
2. load the dataset and the encoders (weights loaded strictly);
3. extract clean features, fit one probe per encoder on clean train features (or load the same fit from the
   probe cache);
4. for every corruption x severity: corrupt the test set chunk by chunk (process pool), or read it chunk by chunk
   from a pre-rendered suite's files, extract, predict -> tidy rows;
5. summarise (pure functions), compare JE with RC, recommend;
6. render every report in memory, then move them into place (no half-written results).
"""
from __future__ import annotations

import dataclasses
import difflib
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from . import checks, engine
from . import summary as summ
from .api import CorruptionSuite, Dataset, EncoderAdapter, LoadedDataset, LoadedEncoder, Probe, Reporter
from .config import RunConfig, parse_severities
from .errors import DataError, UnknownNameError, UsageError
from .cache import Cache, encoder_identity, fingerprint, identity, source_digest, suite_identity
from .cache import key as cache_key
from .features import default_cache_dir, extract, pick_device
from .plugins import Host, create_host
from .probes import ProbeCache
from .results import build_results, write_outputs


@dataclass
class Plan:
    cfg: RunConfig
    dataset: Dataset
    encoders: dict[str, EncoderAdapter]
    suite: CorruptionSuite
    corruptions: list[str]
    severities: list[int]
    probe: Probe
    reporters: list[Reporter]
    device: str
    cache: Cache
    plugin_of: dict[str, str] = field(default_factory=dict)
    probe_cache: ProbeCache | None = None
    torch_threads: int | None = None  # torch's thread count during the run
    train_order: np.ndarray | None = None  # the canonical order of the train images (probes.canonical_order)
    suite_id: dict[str, Any] | None = None  # the suite's cache identity, once its parameter table is known
    timing_detail: dict[str, Any] = field(default_factory=dict)  # clock readings of steps, for results "timing"


# ===================================================================================== 1. resolve
def resolve_corruptions(suite: CorruptionSuite, wanted: list[str], extra: bool) -> list[str]:
    """Names and family names -> corruption names in the suite's order; unknown tokens fail with suggestions."""
    families = suite.families()
    if not wanted:
        chosen = list(suite.default) + (families.get("extra", []) if extra else [])
    else:
        chosen = []
        for token in wanted:
            if token in suite.corruptions:
                chosen.append(token)
            elif token in families:
                chosen.extend(families[token])
            else:
                known = list(suite.corruptions) + list(families)
                close = difflib.get_close_matches(token, known, n=3, cutoff=0.6)
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                raise UnknownNameError(f"unknown corruption {token!r} in suite {suite.name!r}.{hint} "
                                       f"Families: {', '.join(families)}; names: {', '.join(suite.corruptions)}")
        if extra:
            chosen.extend(families.get("extra", []))
    order = list(suite.corruptions)
    return sorted(set(chosen), key=order.index)


def resolve(cfg: RunConfig, host: Host, modules: dict[str, Any] | None = None) -> Plan:
    if not cfg.encoders:
        raise UsageError("no encoder given; pass --encoder NAME (see `jerc-eval list encoders`)")
    from .config import apply_quick, encoder_aliases

    cfg = apply_quick(cfg)

    enc_reg = host.registry("encoders")
    aliases = encoder_aliases(cfg.encoders)  # alias -> registered name ("new=mae"; plain "mae" is its own alias)
    modules = dict(modules or {})
    for alias, mod in modules.items():
        if not isinstance(mod, EncoderAdapter):
            raise UsageError(f"modules[{alias!r}] is a {type(mod).__name__}; wrap a torch module with its paradigm "
                             f"and preprocessing: jerc_eval.ModuleEncoder(model, paradigm='JE', input_size=224)")
    for alias, name in aliases.items():  # names first, so a typo is reported before any option problem
        if alias not in modules:
            enc_reg.entry(name)
    for key in cfg.encoder_options:
        if key not in aliases or key in modules:
            raise UsageError(f"options given for encoder {key!r}, which is not a named encoder of the run; "
                             f"encoders: {', '.join(a for a in aliases if a not in modules)}")
    encoders = {a: modules[a] if a in modules else enc_reg.get(n)(**cfg.encoder_options.get(a, {}))
                for a, n in aliases.items()}
    dataset = host.registry("datasets").get(cfg.dataset)(**cfg.dataset_options)
    suite = host.registry("suites").get(cfg.suite)(**cfg.suite_options)
    if not suite.prerendered:
        if cfg.backend not in suite.backends:
            raise UsageError(f"suite {suite.name!r} has no backend {cfg.backend!r}; use one of "
                             f"{', '.join(suite.backends)}")
        suite.backend = cfg.backend
    probe = host.registry("probes").get(cfg.probe)(**cfg.probe_options)
    reporters = [host.registry("reporters").get(r)() for r in cfg.reporters]
    severities = parse_severities(cfg.severities)
    for s in severities:
        if s not in suite.severities:
            raise UsageError(f"severity {s} is not offered by suite {suite.name!r}; use {list(suite.severities)}")
    corruptions = resolve_corruptions(suite, cfg.corruptions, cfg.extra)
    if cfg.probe_fit_on not in ("clean", "matched"):
        raise UsageError(f"probe_fit_on must be 'clean' or 'matched', not {cfg.probe_fit_on!r}")
    if cfg.probe_fit_on == "matched" and suite.prerendered:
        raise UsageError(f"suite {suite.name!r} reads released corrupted test images only; probe_fit_on 'matched' "
                         f"needs corrupted train images: use probe_fit_on 'clean' or a suite that computes them")
    if cfg.batch_size < 1 or cfg.workers < 0:
        raise UsageError("batch_size must be >= 1 and workers >= 0; fix the flag or config key")
    if cfg.seed < 0:
        raise UsageError(f"seed {cfg.seed} is negative; pass --seed N with N >= 0")
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    checks.check_writable_dir(cfg.out, "--out", "results")  # before any compute; creates nothing
    if not cfg.no_cache:
        checks.check_writable_dir(root, "--cache-dir" if cfg.cache_dir else "cache folder (JERC_EVAL_CACHE)",
                                  "feature cache (or pass --no-cache)")
    checks.check_device(cfg.device)
    cache = Cache(root, enabled=not cfg.no_cache)
    plugin_of = {a: "jerc_eval.evaluate(modules=...)" if a in modules else enc_reg.entry(n).plugin
                 for a, n in aliases.items()}
    device = pick_device(cfg.device)
    suite.device = device
    return Plan(cfg, dataset, encoders, suite, corruptions, severities, probe, reporters,
                device, cache, plugin_of, probe_cache=ProbeCache(cache))


# ===================================================================================== 2. load
def check_images(images: np.ndarray, where: str, min_size: int) -> np.ndarray:
    """Bring images to uint8 NHWC RGB; reject what the corruptions cannot take."""
    if images.ndim == 3:  # grayscale N,H,W
        images = np.repeat(images[..., None], 3, axis=3)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{where} images have shape {images.shape}; expected N x H x W x 3 (or 1/4 channels)")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=3)
    elif images.shape[-1] == 4:
        images = images[..., :3]  # RGBA: the alpha channel carries no class signal for a photo encoder
    if images.dtype != np.uint8:
        raise DataError(f"{where} images are {images.dtype}; convert them to uint8 in 0..255")
    h, w = images.shape[1:3]
    if min(h, w) < min_size:
        raise DataError(f"{where} images are {h}x{w} px, below the {min_size} px the corruptions need; "
                        f"upsample them (e.g. -d image_size {min_size}) or use a suite for small images")
    return np.ascontiguousarray(images)


def load_dataset(plan: Plan) -> LoadedDataset:
    data = plan.dataset.load(plan.cfg.seed)
    for warning in checks.validate_labels(data, plan.cfg.dataset):  # labels first: errors before any compute
        print(f"warning: {warning}", file=sys.stderr)
        data.provenance.setdefault("warnings", []).append(warning)
    data.train.images = check_images(data.train.images, f"{plan.cfg.dataset} train", plan.suite.min_size)
    data.test.images = check_images(data.test.images, f"{plan.cfg.dataset} test", plan.suite.min_size)
    for split, s in (("train", data.train), ("test", data.test)):
        if len(s.images) != len(s.labels) or len(s.images) == 0:
            raise DataError(f"{plan.cfg.dataset} {split}: {len(s.images)} images but {len(s.labels)} labels")
    plan.suite.validate(data.test.images, data.test.labels)
    plan.suite_id = suite_identity(plan.suite)  # after validate: an 'auto' parameter table is decided there
    if plan.suite.prerendered:  # every cell present with one image per test image, before any compute
        plan.suite.validate_cells([(c, s) for c in plan.corruptions for s in plan.severities], data.test.labels)
    return data


# ===================================================================================== 3-4. features & probes
class Evaluator:
    """Feature extraction with caching for one encoder, and its fitted probe."""

    def __init__(self, name: str, adapter: EncoderAdapter, encoder: LoadedEncoder, plan: Plan, dataset_fp: str):
        self.name, self.adapter, self.encoder, self.plan = name, adapter, encoder, plan
        self.identity = encoder_identity(adapter, encoder)
        self.fp = fingerprint(self.identity)
        self.dataset_fp = dataset_fp
        self.probe: Any = None
        self.probe_info: dict[str, Any] = {}

    def key(self, split: str, corruption: str, severity: int) -> str:
        """The feature-cache key of one split and cell (``jerc_eval.cache``: the encoder's identity, the
        dataset's fingerprint and, for a corrupted cell, the suite's identity and the run seed)."""
        clean = corruption == "clean"
        return cache_key("features", encoder=self.identity, dataset=self.dataset_fp, split=split,
                         corruption=corruption, severity=severity, seed=None if clean else self.plan.cfg.seed,
                         suite=None if clean else self.plan.suite_id)

    def has(self, split: str, corruption: str, severity: int) -> bool:
        return self.plan.cache.has("features", self.key(split, corruption, severity))

    def features(self, images: np.ndarray | None, split: str, corruption: str, severity: int) -> np.ndarray:
        return cached_features(self.plan, self.key(split, corruption, severity), self.encoder, images)


def cached_features(plan: Plan, key: str, encoder: LoadedEncoder, images: np.ndarray) -> np.ndarray:
    """The features under ``key``, extracted (and stored) when the cache has no sound entry; float32 values
    rounded through float16 either way."""
    feats = plan.cache.get_array("features", key, rows=len(images))
    if feats is None:
        feats = extract(encoder, images, plan.cfg.batch_size, plan.device)
        plan.cache.put_array("features", key, feats.astype(np.float16))
    return feats.astype(np.float32)


def caches_fits(probe: Probe) -> bool:
    """Whether fits of ``probe`` go to the probe cache: the built-in logreg and sgd probes (kNN costs nothing to
    fit). A plugin probe opts in with a class attribute ``cache_fits = True`` when its fit depends on nothing but
    features, labels, class count, seed, device and its options, and its ``predict`` is a built-in model's."""
    explicit = getattr(type(probe), "cache_fits", None)
    if explicit is not None:
        return bool(explicit)
    return _builtin_torch_fit(probe)


def _builtin_torch_fit(probe: Probe) -> bool:
    """The built-in logreg and sgd probes: deterministic torch fits on one CPU thread (``probes.on_one_cpu_thread``)."""
    return type(probe).__module__ == "jerc_eval.default_plugins.probes" and probe.name in ("logreg", "sgd")


def fit_probe(plan: Plan, features: np.ndarray, labels: np.ndarray, num_classes: int, feature_key: str | None,
              probe: Probe | None = None) -> Any:
    """``probe.fit`` (default: the run's probe), or the same fit from the probe cache.

    The cache key holds the feature-cache key of ``features`` and a digest of their values, the labels, the
    class count, the probe (name, class, version, options), the run seed, the device and the torch version, and
    the probe implementation version: a cached fit is used only where a refit would compute the same thing.
    A fit is cached only with the feature cache on (``--no-cache`` refits everything).
    """
    from .probes import array_digest

    probe = probe or plan.probe
    if plan.train_order is not None and len(plan.train_order) == len(labels):
        # the canonical order of the train images: a fit (and its choice of C) that does not depend on file order
        features, labels = features[plan.train_order], labels[plan.train_order]
    cache = plan.probe_cache
    key = None
    if cache is not None and cache.enabled and feature_key is not None and caches_fits(probe):
        key = cache.key(features=feature_key, digest=array_digest(features), labels=array_digest(labels),
                        num_classes=int(num_classes), probe=identity(probe), seed=plan.cfg.seed, device=plan.device)
        hit = cache.load(key, plan.device)
        if hit is not None:
            return hit
    fitted = probe.fit(features, labels, num_classes, plan.cfg.seed, plan.device)
    if key is not None:
        cache.store(key, fitted)
    return fitted


def fit_probes(plan: Plan, jobs: list[tuple], progress: bool = False, desc: str = "probe fits") -> list[Any]:
    """:func:`fit_probe` for every job ``(features, labels, num_classes, feature_key, probe)``, in job order.

    On the CPU the built-in probes fit on one torch thread each, so they run side by side, as many at a time as the
    run has torch threads; the results are the same bits as one after another. Other probes (plugins, whose thread
    safety is unknown) and other devices fit one after another."""
    import torch
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    side_by_side = (plan.device == "cpu" and threads > 1 and len(jobs) > 1
                    and all(_builtin_torch_fit(job[4] or plan.probe) for job in jobs))
    bar = dict(total=len(jobs), desc=desc, disable=not progress)
    if not side_by_side:
        return [fit_probe(plan, *job) for job in tqdm(jobs, **bar)]
    from concurrent.futures import ThreadPoolExecutor

    from .features import single_threaded

    # one thread for the whole pool: each fit's own single_threaded() then saves and restores 1, never another
    # fit's setting
    from .probes import fold_threads

    def one(job: tuple) -> Any:
        with fold_threads(1):  # the fits share the cores already: each runs its folds one after another
            return fit_probe(plan, *job)

    with single_threaded(), ThreadPoolExecutor(min(threads, len(jobs))) as pool:
        return list(tqdm(pool.map(one, jobs), **bar))


def _row(name: str, plan: Plan, corruption: str, severity: int, pred: np.ndarray, labels: np.ndarray,
         family: str) -> dict[str, Any]:
    from .metrics import wilson_interval

    correct, n = int((pred == labels).sum()), int(len(labels))
    lo, hi = wilson_interval(correct, n)
    return {"encoder": name, "dataset": plan.cfg.dataset, "probe": plan.cfg.probe, "suite": plan.suite.name,
            "backend": "none" if corruption == "clean" else plan.suite.backend, "corruption": corruption,
            "family": family, "severity": severity, "n": n, "correct": correct,
            "accuracy": correct / n, "ci95": [lo, hi]}


@dataclass
class FloorFeatures:
    """Clean features of an encoder's random-initialised twin (the floor), before its probe is fitted."""
    train: np.ndarray
    test: np.ndarray
    train_key: str
    seed: int


def floor_features(adapter: EncoderAdapter, data: LoadedDataset, plan: Plan) -> FloorFeatures | None:
    """Clean train/test features of the same architecture with random weights (seeded); None without a floor."""
    from .seeding import derive_seed

    seed = derive_seed(plan.cfg.seed, "random-init", adapter.name)
    rand = adapter.random_init(seed)
    if rand is None:
        return None
    ident = encoder_identity(adapter, rand)

    def key(split: str) -> str:
        return cache_key("features", floor="random-init", encoder=ident, seed=seed, dataset=data.fingerprint,
                         split=split)

    return FloorFeatures(cached_features(plan, key("train"), rand, data.train.images),
                         cached_features(plan, key("test"), rand, data.test.images), key("train"), seed)


def floor_result(floor: FloorFeatures, fitted: Any, data: LoadedDataset) -> dict:
    """The floor's clean test accuracy through ``fitted`` (the run's probe, fitted on the floor's train features)."""
    from .metrics import wilson_interval

    correct = int((fitted.predict(floor.test) == data.test.labels).sum())
    n = len(data.test.labels)
    return {"accuracy": correct / n, "ci95": list(wilson_interval(correct, n)), "n": n, "seed": floor.seed,
            "probe_C": fitted.info.get("C")}


# ===================================================================================== orchestration
def run(cfg: RunConfig, host: Host | None = None, echo: Callable[[str], None] = print,
        progress: bool = True, modules: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg``; returns the results document and writes every report under ``cfg.out``. ``modules``:
    ready encoders (``ModuleEncoder``) by alias, listed in ``cfg.encoders`` too (``jerc_eval.evaluate``)."""
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    host = host or create_host()
    plan = resolve(cfg, host, modules)  # 1
    timing["resolve_s"] = time.perf_counter() - t0
    from .seeding import kept_process_state

    with kept_process_state(), _cache_active(plan):
        return _run(plan, host, t0, timing, echo, progress)


@contextmanager
def _cache_active(plan: Plan) -> Iterator[None]:
    """The run's cache is the one datasets render into; stale temp files of killed runs go first."""
    from .cache import activated

    plan.cache.sweep()
    with activated(plan.cache):
        yield


def _run(plan: Plan, host: Host, t0: float, timing: dict[str, float], echo: Callable[[str], None],
         progress: bool) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    plan.torch_threads = torch.get_num_threads()  # what the run uses (environment.torch_threads)
    if plan.cfg.quick:
        echo("jerc-eval: --quick: a subset of the default comparison (see config.quick in results); rerun without "
             "--quick for the full numbers")
    echo(f"jerc-eval: loading dataset {plan.cfg.dataset} (a first run may render or decode it) and "
         f"{len(plan.encoders)} encoder(s) ...")
    data = load_dataset(plan)  # 2
    from .probes import canonical_order

    plan.train_order = canonical_order(data.train.images, plan.cfg.seed)
    loaded = {n: a.load() for n, a in plan.encoders.items()}
    for n, enc in loaded.items():  # an inferred architecture detail is said, with the option that overrides it
        for option, g in enc.meta.get("guessed", {}).items():
            flag = f"-o {n}.{option} N" if len(loaded) > 1 else f"-o {option} N"
            echo(f"jerc-eval: warning: {n}: {g['why']}: guessed {option} {g['value']}; pass {flag} to set it")
    evals = {n: Evaluator(n, plan.encoders[n], loaded[n], plan, data.fingerprint) for n in plan.encoders}
    timing["load_s"] = time.perf_counter() - t0 - timing["resolve_s"]
    echo(f"jerc-eval: {len(evals)} encoder(s) x {len(plan.corruptions)} corruption(s) x "
         f"{len(plan.severities)} severities on {plan.cfg.dataset} ({len(data.test.labels)} test images), "
         f"device {plan.device}")

    # e.g. the reference glass blur's JIT compile, once here instead of in every worker, beside the clean stage;
    # only for corruptions with cells to compute (a warm rerun corrupts nothing)
    splits = ("test", "train") if plan.cfg.probe_fit_on == "matched" else ("test",)
    cells = [(c, s) for c in plan.corruptions for s in plan.severities]
    to_corrupt = sorted({c for split in splits for c, _ in uncached_cells(evals, split, cells)},
                        key=plan.corruptions.index)
    warming = engine.warm_up(plan.suite, to_corrupt) if to_corrupt else None
    rows: list[dict[str, Any]] = []
    n_cls = len(data.class_names)
    clean, floor_feats = {}, {}
    for name, ev in tqdm(evals.items(), desc="clean features", disable=not progress):  # 3
        clean[name] = (ev.features(data.train.images, "train", "clean", 0),
                       ev.features(data.test.images, "test", "clean", 0))
        if plan.cfg.floors:
            floor_feats[name] = floor_features(plan.encoders[name], data, plan)
    with_floor = [n for n, f in floor_feats.items() if f is not None]
    fits = fit_probes(plan, [(clean[n][0], data.train.labels, n_cls, evals[n].key("train", "clean", 0), None)
                             for n in evals]
                      + [(floor_feats[n].train, data.train.labels, n_cls, floor_feats[n].train_key, plan.probe)
                         for n in with_floor], progress, "clean probe fits")
    for (name, ev), fitted in zip(evals.items(), fits):
        ev.probe, ev.probe_info = fitted.predict, fitted.info
        ev.probe_info["feature_dim"] = int(clean[name][0].shape[1])
        rows.append(_row(name, plan, "clean", 0, ev.probe(clean[name][1]), data.test.labels, "clean"))
    floor_fits = dict(zip(with_floor, fits[len(evals):]))
    floors: dict[str, Any] = {n: (floor_result(floor_feats[n], floor_fits[n], data) if n in floor_fits else None)
                              for n in floor_feats}
    timing["clean_s"] = time.perf_counter() - t0 - sum(timing.values())

    keep, kept = None, {}
    if plan.cfg.alignment:
        from .alignment_evidence import subset_indices

        keep = subset_indices(len(data.test.images), 256, plan.cfg.seed)
    if warming is not None:
        engine.join(warming)  # before the corruption workers fork (polled: a SIGTERM is acted on at once)
    rows += corrupted_rows(plan, evals, data, progress, keep, kept)  # 4
    timing["corrupted_s"] = time.perf_counter() - t0 - sum(timing.values())

    evidence = alignment_evidence(plan, data, evals, keep, kept) if keep is not None else None  # 5
    timing["alignment_s"] = time.perf_counter() - t0 - sum(timing.values())
    results = build_results(plan, host, data, evals, rows, floors, timing, evidence)
    results["timing"].update(plan.timing_detail)
    results["timing"]["total_s"] = time.perf_counter() - t0
    write_outputs(results, plan.reporters, Path(plan.cfg.out))  # 6
    echo(summ.console_table(results))
    c = plan.cache
    echo(f"wrote {', '.join(str(Path(plan.cfg.out) / r.filename) for r in plan.reporters)} "
         f"in {results['timing']['total_s']:.1f} s (feature cache: {c.hits['features']} hits, "
         f"{c.misses['features']} misses; probe cache: {c.hits['probes']} hits)")
    for line in filter(None, [c.recomputed_line()]):
        echo(line)
    if c.write_errors:
        echo(f"jerc-eval: {len(c.write_errors)} cache entries could not be written ({c.write_errors[0]}); "
             f"the results are complete, a rerun recomputes them")
    return results


# Corrupted images are made, encoded and dropped this many at a time (rounded down to a multiple of the batch
# size, so the encoder sees exactly the batches it would see on the whole cell: bit-identical features).
STREAM_CHUNK = 1024


def stream_chunk(plan: Plan) -> int:
    bs = plan.cfg.batch_size
    return max(1, STREAM_CHUNK // bs) * bs


def _keep_into(kept: np.ndarray | None, keep: np.ndarray, start: int, stop: int, imgs: np.ndarray) -> np.ndarray:
    """Copy the images of ``keep`` that fall in ``[start, stop)`` into ``kept`` (allocated on the first chunk)."""
    if kept is None:
        kept = np.empty((len(keep), *imgs.shape[1:]), dtype=imgs.dtype)
    sel = (keep >= start) & (keep < stop)
    kept[sel] = imgs[keep[sel] - start]
    return kept


def uncached_cells(evals: dict[str, Evaluator], split: str, cells: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The cells of ``split`` some encoder has no cached features for: the ones a run corrupts."""
    return [cell for cell in cells if not all(ev.has(split, *cell) for ev in evals.values())]


def _cell_stream(plan: Plan, evals: dict[str, Evaluator], images: np.ndarray, split: str,
                 cells: list[tuple[str, int]], run_seed: int, keep: np.ndarray | None = None) -> Any:
    """Yield ``(cell, {encoder: features}, kept)`` in the order of ``cells``; cached cells are not corrupted again.

    A cell is corrupted (or, for a pre-rendered suite, read with ``iter_cell``), encoded (by each encoder whose
    features are not cached) and dropped chunk by chunk (``stream_chunk``), so memory holds a bounded number of
    corrupted images whatever the size of the set; only the fp16 features stay. ``kept`` is the cell's corrupted
    images at indices ``keep`` (None when the cell came from the cache or ``keep`` is None).
    """
    from .engine import corrupt_chunks

    workers = plan.cfg.workers or None
    if plan.suite.backend != "reference":  # torch backends batch in-process (and on the GPU when present)
        workers = 1
    chunk = stream_chunk(plan)
    n = len(images)
    todo = uncached_cells(evals, split, cells)

    # on the CPU the forward wants every core the pool would use: alternate instead of overlapping
    overlap = plan.device != "cpu"

    def source(cells: list[tuple[str, int]], workers: int | None) -> Any:
        # computed cells, or a pre-rendered suite's cells read with iter_cell: the same chunks either way
        return corrupt_chunks(plan.suite, images, cells, run_seed, workers, chunk=chunk, overlap=overlap)

    fresh = source(todo, workers)
    for cell in cells:
        feats: dict[str, np.ndarray] = {}
        for name, ev in evals.items():
            got = plan.cache.get_array("features", ev.key(split, *cell), rows=n)
            if got is not None:
                feats[name] = got.astype(np.float32)
        missing = [name for name in evals if name not in feats]
        kept = None
        if cell in todo or missing:
            # a cell listed as cached whose entry turned out damaged is corrupted (or read) again here, in-process
            chunks = fresh if cell in todo else source([cell], 1)
            parts: dict[str, list[np.ndarray]] = {name: [] for name in missing}
            stop = 0
            while stop < n:
                got_cell, start, stop, imgs = next(chunks)
                assert got_cell == cell and start == (stop - len(imgs)), (got_cell, cell)
                for name in missing:
                    ev = evals[name]
                    parts[name].append(extract(ev.encoder, imgs, plan.cfg.batch_size, plan.device).astype(np.float16))
                if keep is not None:
                    kept = _keep_into(kept, keep, start, stop, imgs)
                del imgs
            for name in missing:
                half = np.concatenate(parts.pop(name))
                plan.cache.put_array("features", evals[name].key(split, *cell), half)
                feats[name] = half.astype(np.float32)  # what extract() returns, and what the cache gives back
        yield cell, feats, kept


def corrupted_rows(plan: Plan, evals: dict[str, Evaluator], data: LoadedDataset, progress: bool,
                   keep: np.ndarray | None = None, kept: dict | None = None) -> list[dict]:
    """One row per (encoder, corruption, severity). With ``probe_fit_on = "matched"`` the probe of each cell is
    fit on the train split under the same corruption and severity (the paper's Table 1 reading).
    Corrupted test images at indices ``keep`` are stored in ``kept`` (for the alignment evidence)."""
    from tqdm.auto import tqdm

    from .seeding import derive_seed

    cells = [(c, s) for c in plan.corruptions for s in plan.severities]
    family = plan.suite.corruptions
    matched = plan.cfg.probe_fit_on == "matched"
    test_stream = _cell_stream(plan, evals, data.test.images, "test", cells, plan.cfg.seed,
                               keep if kept is not None else None)
    train_stream = _cell_stream(plan, evals, data.train.images, "train", cells,
                                derive_seed(plan.cfg.seed, "train")) if matched else None
    rows = []
    for cell, feats, subset in tqdm(test_stream, total=len(cells), desc="corruptions x severities",
                                    disable=not progress):
        if subset is not None and kept is not None:
            kept[cell] = subset
        train_feats = next(train_stream)[1] if train_stream is not None else None
        for name, ev in evals.items():
            predict, extra = ev.probe, {}
            if train_feats is not None:
                fitted = fit_probe(plan, train_feats[name], data.train.labels, len(data.class_names),
                                   ev.key("train", *cell))
                predict = fitted.predict
                extra = {"probe_train_accuracy": fitted.info.get("train_accuracy")}
            row = _row(name, plan, *cell, predict(feats[name]), data.test.labels, family[cell[0]])
            rows.append({**row, **extra})
    return rows


def alignment_evidence(plan: Plan, data: LoadedDataset, evals: dict[str, Evaluator], keep: np.ndarray,
                       kept: dict) -> dict[str, Any] | None:
    """Spectra, alignment and regimes per corruption cell (see docs/recommendation.md); cached as JSON.

    Cells whose features came from the cache are corrupted here for the ``keep`` subset only, with the same
    per-image seeds as the full run, so the evidence is identical whatever was cached.
    """
    from . import alignment_evidence as ae_module
    from .alignment_evidence import estimate
    from .seeding import image_seeds

    recipes = {n: ev.encoder.augmentation for n, ev in evals.items()}
    paradigms = {n: ev.encoder.paradigm for n, ev in evals.items()}
    cells = [(c, s) for c in plan.corruptions for s in plan.severities]
    key = cache_key("alignment", estimator=source_digest(ae_module), dataset=data.fingerprint, cells=cells,
                    seed=plan.cfg.seed, suite=plan.suite_id, recipes=recipes, paradigms=paradigms)
    hit = plan.cache.get_json("alignment", key)
    if isinstance(hit, dict) and "cells" in hit:
        return hit
    if hit is not None:
        plan.cache.discard("alignment", key, "not an alignment-evidence document")
    n = len(data.test.images)
    for c, s in cells:
        if (c, s) not in kept:
            if plan.suite.prerendered:  # read chunk by chunk, keeping only the subset
                imgs = None
                for _, start, stop, chunk in engine.read_chunks(plan.suite, [(c, s)], n, stream_chunk(plan)):
                    imgs = _keep_into(imgs, keep, start, stop, chunk)
            else:
                seeds = image_seeds(plan.cfg.seed, c, s, n)[keep]
                imgs = plan.suite.corrupt(data.test.images[keep], c, s, seeds)
            kept[(c, s)] = imgs
    evidence = estimate(data.test.images, data.test.labels, kept, recipes=recipes, seed=plan.cfg.seed,
                        max_images=len(keep), paradigms=paradigms)
    # clock readings are no part of the evidence: a same-seed run gives the same document (results "timing")
    plan.timing_detail["alignment_evidence"] = evidence.pop("timing_s", None)
    plan.cache.put_json("alignment", key, evidence)
    return evidence


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
