"""The comparison protocol (``arl-hf compare``, :mod:`arl_hf.scripts.compare`): every method under one protocol.

    arl-hf compare --preset avdigits_bench --unimodal_bounds --tune_trials 8 --workers 2
    arl-hf compare --strategies none arl --seeds 0 1 2 3 4 --num_train_epochs 20

Every option of ``arl-hf train`` applies to every run; ``--strategy``, ``--seed`` and
``--output_dir`` are set per run. Top to bottom:

1. the dataset is loaded once, so every run sees the same train / validation / test data;
2. ``--tune_trials N``: N optuna trials per method and per unimodal bound, on the validation
   split only, from a tuning seed no reported seed uses (:mod:`arl_hf.protocol.tuning`);
3. every method x seed (and, with ``--unimodal_bounds``, every modality's encoder alone) is
   trained with its tuned values, its checkpoint selected on validation, each split evaluated
   once, the encoders probed, the checkpoints deleted (:mod:`arl_hf.protocol.runs`);
4. ``fixed`` (Fig. 1b) multiplies the gradient of the modality concatenation relies on most
   (higher validation accuracy of its unimodal head) by ``--fixed_factor``, at concatenation's
   tuned learning rate, untuned;
5. ``<compare_dir>/results.json`` / ``.md`` / ``.csv``, ``runs.csv``, ``results.png`` and
   ``suppression.png`` (:mod:`arl_hf.protocol.table`). Finished runs of the same
   configuration are skipped (their records are keyed by a fingerprint of it): an interrupted
   table resumes, a changed option retrains.

``--smoke`` tries the protocol on one's own data in minutes (:data:`SMOKE_OPTIONS`); ``--tuned_from``
reruns the tuned values of an earlier ``results.json`` (another dataset, more seeds). The results
warn (output and ``results.md``) when fewer than 5 seeds are reported and when a unimodal bound
lies below a probe by more than its spread.

Folder names come from method and modality names (:func:`arl_hf.safety.safe_name`: a
modality column that is not a safe file name is refused before any run), and every deletion
stays inside ``compare_dir``. With ``--workers N`` the first failed run stops the protocol:
runs not yet started are not started.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..log import get_logger
from ..safety import atomic_write_json, confine, fingerprint, remove_path, safe_name
from ..strategies import builtin_strategies
from .runs import BOUND_PREFIX, RunSpec, method_name, read_reusable, run_config, run_one
from .table import build_results, write_outputs

logger = get_logger(__name__)

#: the default methods: every built-in strategy, in registration order (:func:`arl_hf.strategies.builtin_strategies`)
ALL_STRATEGIES = builtin_strategies()
PER_RUN = ("--strategy", "--seed", "--output_dir")
DEFAULT_SEEDS = [0, 1, 2, 3, 4]
#: ``--smoke``: a budget that tries the protocol on one's own data in minutes: 2 seeds (unless
#: ``--seeds`` is given), at most 2 tuning trials, and these run options unless given on the
#: command line (the first N examples of each split, 2 epochs)
SMOKE_SEEDS = [0, 1]
SMOKE_TRIALS = 2
SMOKE_OPTIONS = {"num_train_epochs": 2, "max_train_samples": 256, "max_eval_samples": 128, "max_test_samples": 128}


def _given(rest: Sequence[str], name: str) -> bool:
    flag = f"--{name}"
    return any(a == flag or a.startswith(flag + "=") for a in rest)


def apply_budget(own: argparse.Namespace, rest: Sequence[str]) -> List[str]:
    """The run options after ``--smoke`` (:data:`SMOKE_OPTIONS`, those not given in ``rest``);
    fills ``own.seeds`` (the default, or :data:`SMOKE_SEEDS` with ``--smoke``) and caps
    ``own.tune_trials`` at :data:`SMOKE_TRIALS` with ``--smoke``. Idempotent."""
    rest = list(rest)
    smoke = bool(getattr(own, "smoke", False))
    if getattr(own, "seeds", None) is None:
        own.seeds = list(SMOKE_SEEDS if smoke else DEFAULT_SEEDS)
    if smoke:
        own.tune_trials = min(int(own.tune_trials), SMOKE_TRIALS)
        for key, value in SMOKE_OPTIONS.items():
            if not _given(rest, key):
                rest += [f"--{key}", str(value)]
    return rest


def check_compare_args(own: argparse.Namespace, rest: Sequence[str]) -> None:
    """``ValueError`` for protocol options that cannot run: a per-run option among the run
    options ``rest``, an unknown strategy, a tuning seed that is a reported seed, no worker,
    ``fixed`` without ``none`` (the options are :func:`arl_hf.scripts.compare.make_parser`'s)."""
    for flag in PER_RUN:
        if any(a == flag or a.startswith(flag + "=") for a in rest):
            raise ValueError(f"{flag[2:]}: set per run by compare; use --strategies / --seeds / --compare_dir")
    from ..strategies import STRATEGIES

    unknown = [s for s in own.strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"strategies: unknown strategy {unknown[0]!r}; expected names among {sorted(STRATEGIES)}")
    if own.seeds is None:  # apply_budget not called yet: the default seeds
        own.seeds = list(DEFAULT_SEEDS)
    if own.tuning_seed in own.seeds:
        raise ValueError(f"tuning_seed: {own.tuning_seed} is also a reported seed; expected a seed not in {own.seeds}")
    if own.workers < 1:
        raise ValueError(f"workers: expected >= 1, got {own.workers}")
    if "fixed" in own.strategies and "none" not in own.strategies:
        raise ValueError("strategies: 'fixed' takes its dominant modality and learning rate from 'none'; add it")
    if getattr(own, "tuned_from", None) and own.tune_trials > 0:
        raise ValueError(f"tuned_from: takes the tuned values of {own.tuned_from!r}; expected --tune_trials 0, "
                         f"got {own.tune_trials}")


def tuned_values(path: str, methods: Sequence[str]) -> Dict[str, Any]:
    """``{method: hyperparameters}`` of ``methods`` (strategies and ``bound:<m>``) read from a
    ``results.json`` of an earlier table; ``FileNotFoundError`` / ``ValueError`` naming the file
    and the method it lacks."""
    import json

    if not os.path.isfile(path):
        raise FileNotFoundError(f"tuned_from: no results file {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        table, bounds = results["methods"], results.get("unimodal_bounds_hyperparameters") or {}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"tuned_from: {path!r} is not a results.json of the protocol ({type(err).__name__}: {err})")
    out: Dict[str, Any] = {}
    for m in methods:
        hp = bounds.get(m[len(BOUND_PREFIX):]) if m.startswith(BOUND_PREFIX) else \
            (table.get(m) or {}).get("hyperparameters")
        if not isinstance(hp, dict) or not isinstance(hp.get("best"), dict):
            raise ValueError(f"tuned_from: {path!r} has no tuned values for {m!r}; expected a method tuned there")
        out[m] = hp
    return out


# ---- work items (module level: they run in worker processes) ----------------------------------
_DATA: Dict[str, Any] = {}


def _init_worker(rest: List[str], data_seed: int, truncate: bool = False) -> None:
    from ..building import load_data
    from ..building import truncate as truncate_splits
    from ..scripts.train import parse_args

    _, _, data_args, _ = parse_args(rest, overrides={"output_dir": "unused"})
    _DATA["dataset"], _DATA["collator"], _DATA["record"] = load_data(data_args, seed=data_seed)
    if truncate:  # --smoke: tuning, runs and probes all see the first examples only
        _DATA["dataset"] = truncate_splits(_DATA["dataset"], data_args)


def _run_job(job: Tuple[List[str], RunSpec, str, bool]) -> Dict[str, Any]:
    rest, spec, run_dir, keep = job
    return run_one(rest, spec, _DATA["dataset"], _DATA["collator"], run_dir, keep_checkpoints=keep)


def _tune_job(job: Tuple[List[str], str, int, int, str, float]) -> Dict[str, Any]:
    from ..run_dir import release_output_dir
    from ..scripts.train import parse_args
    from .runs import run_values
    from .tuning import search_space, tune, tuning_trainer

    rest, method, n_trials, seed, out, base_lr = job
    path = out + ".json"
    spec = RunSpec(method, seed)
    parsed = parse_args(rest, overrides={**run_values(spec, out), "save_total_limit": 1})
    config = run_config(parsed, _DATA["dataset"], tuning=method, n_trials=n_trials, sampler_seed=seed,
                        base_learning_rate=base_lr)
    done = read_reusable(path, config, "tuning result")
    if done is not None and isinstance(done.get("best"), dict):
        return done
    modality = spec.bound_modality
    trainer = tuning_trainer(parsed, _DATA["dataset"], _DATA["collator"], modality=modality)
    strategy = "none" if modality else method
    start = time.perf_counter()
    result = tune(trainer, search_space(strategy, base_lr), n_trials, sampler_seed=seed)
    result["wall_time_s"] = time.perf_counter() - start
    release_output_dir(out)
    remove_path(out, os.path.dirname(out), "tuning folder")
    result.update(fingerprint=fingerprint(config), config=config)
    atomic_write_json(path, result)
    return result


def run_jobs(executor: Optional[Executor], fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int) -> List[Any]:
    """``[fn(job) for job in jobs]``, at most ``workers`` at a time on ``executor`` (inline when
    ``None``), results in job order. The first failure stops the submission: jobs not yet
    started are never started; those running are waited for, then the failure is raised."""
    if executor is None:
        return [fn(j) for j in jobs]
    results: List[Any] = [None] * len(jobs)
    pending = iter(enumerate(jobs))
    running: Dict[Any, int] = {}
    error: Optional[BaseException] = None

    def submit() -> None:
        for i, job in pending:
            running[executor.submit(fn, job)] = i
            return

    for _ in range(max(1, workers)):
        submit()
    while running:
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for future in done:
            i = running.pop(future)
            if future.exception() is not None:
                error = error or future.exception()
            else:
                results[i] = future.result()
            if error is None:
                submit()
    if error is not None:
        raise error
    return results


class _Pool:
    """Runs jobs inline (one worker) or in ``workers`` spawned one-process-each workers."""

    def __init__(self, workers: int, rest: List[str], data_seed: int, truncate: bool = False):
        self.workers = workers
        self.pool: Optional[ProcessPoolExecutor] = None
        if workers > 1:
            import multiprocessing

            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(rest, data_seed, truncate))
        else:
            _init_worker(rest, data_seed, truncate)

    def map(self, fn, jobs: Sequence[Any]) -> List[Any]:
        return run_jobs(self.pool, fn, jobs, self.workers)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _overrides(hp: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return dict(hp["best"]) if hp else {}


def run(own: argparse.Namespace, rest: List[str]) -> int:
    """Run the protocol: ``own`` are its options (:func:`arl_hf.scripts.compare.make_parser`),
    ``rest`` the run options given to every run; returns 0."""
    from ..scripts.train import parse_args

    rest = apply_budget(own, rest)
    check_compare_args(own, rest)
    training_args, _, data_args, run_args = parse_args(rest, overrides={"output_dir": "unused"})
    if not own.compare_dir:
        base = os.path.basename(os.path.normpath(str(data_args.dataset)))
        name = base + (f"-{data_args.dataset_config}" if data_args.dataset_config else "")
        own.compare_dir = os.path.join("outputs", safe_name(f"compare-{name}", "compare_dir (default, from the "
                                                                             "dataset name; pass --compare_dir)"))
    os.makedirs(own.compare_dir, exist_ok=True)
    start = time.perf_counter()
    pool = _Pool(own.workers, rest, own.data_seed, truncate=bool(getattr(own, "smoke", False)))
    try:
        first = pool.map(_dataset_modalities, [None])[0]
        classes = pool.map(_dataset_num_labels, [None])[0]
        bounds = [f"{BOUND_PREFIX}{m}" for m in first] if own.unimodal_bounds else []
        tuned = [m for m in own.strategies if m != "fixed"] + bounds
        for m in own.strategies + bounds:  # every folder name checked before any run starts
            for s in own.seeds:
                _run_dir(own, m, s)
        hps: Dict[str, Any] = {}
        if getattr(own, "tuned_from", None):
            hps = tuned_values(own.tuned_from, tuned)
        elif own.tune_trials > 0:
            tdir = os.path.join(own.compare_dir, "tuning")
            os.makedirs(tdir, exist_ok=True)
            jobs = [(rest, m, own.tune_trials, own.tuning_seed,
                     confine(os.path.join(tdir, method_name(m)), tdir, "tuning folder"),
                     training_args.learning_rate) for m in tuned]
            hps = dict(zip(tuned, pool.map(_tune_job, jobs)))
            for m, h in hps.items():
                print(f"[compare] tuned {m}: {h['best']} (validation accuracy {100 * h['best_objective']:.2f})",
                      flush=True)
        jobs = [(rest, RunSpec(m, s, _overrides(hps.get(m))), _run_dir(own, m, s), own.keep_checkpoints)
                for m in tuned for s in own.seeds]
        records = pool.map(_run_job, jobs)
        if "fixed" in own.strategies:
            fixed = _fixed_overrides(records, first, own.fixed_factor, hps.get("none"))
            hps["fixed"] = {"space": {}, "best": {}, "fixed": fixed, "n_trials": 0, "sampler_seed": None,
                            "best_objective": None}
            records += pool.map(_run_job, [(rest, RunSpec("fixed", s, fixed), _run_dir(own, "fixed", s),
                                            own.keep_checkpoints) for s in own.seeds])
    finally:
        pool.close()
    order = {m: i for i, m in enumerate(own.strategies + bounds)}
    records.sort(key=lambda r: (order.get(r["method"], len(order)), r["seed"]))
    from ..cards import shareable_tree, shareable_value

    meta = {"dataset": shareable_value(data_args.dataset, note=True), "dataset_config": data_args.dataset_config,
            "preset": run_args.preset, **recipe_meta(training_args), "chance_accuracy": 1.0 / classes,
            "smoke": bool(getattr(own, "smoke", False))}
    results = build_results(records, own.seeds, own.split, hps, meta)
    results["wall_time_s"] = time.perf_counter() - start
    results["workers"] = own.workers
    for w in results["warnings"]:
        logger.warning("compare: %s", w)
    # a results file meant to be shared: no absolute local path (the tuning records keep theirs)
    results = shareable_tree(results)
    write_outputs(records, results, own.compare_dir, make_plots=not own.no_plots)
    with open(os.path.join(own.compare_dir, "results.md"), encoding="utf-8") as f:
        print(f.read())
    print(f"[compare] {len(records)} runs, wall time {results['wall_time_s']:.0f} s -> {own.compare_dir}")
    return 0


def recipe_meta(training_args: Any) -> Dict[str, Any]:
    """The schedule and stopping rule every run shared: ``{"num_train_epochs", "lr_decay_epochs",
    "early_stopping": {"patience", "after_epoch"} or None}``."""
    patience = training_args.early_stopping_patience
    decays = training_args.lr_decay_epochs
    return {"num_train_epochs": float(training_args.num_train_epochs),
            "lr_decay_epochs": sorted(int(e) for e in decays) if decays else [],
            "early_stopping": None if patience is None else {
                "patience": int(patience), "after_epoch": int(training_args.early_stopping_after_epoch or 0)}}


def _dataset_num_labels(_: Any) -> int:
    from ..building import num_labels

    return int(num_labels(_DATA["dataset"]))


def _dataset_modalities(_: Any) -> List[str]:
    from ..building import sample_batch

    batch = sample_batch(_DATA["dataset"]["train"], _DATA["collator"])
    return [k for k in batch if k not in ("labels", "label", "label_ids")]


def _run_dir(own: argparse.Namespace, method: str, seed: int) -> str:
    """``compare_dir/<run name>``; ``ValueError`` if the name is not a safe file name or the
    folder resolves outside ``compare_dir``."""
    return confine(os.path.join(own.compare_dir, RunSpec(method, seed).name), own.compare_dir, "run folder")


def _fixed_overrides(records: List[Dict[str, Any]], modalities: List[str], factor: float,
                     concat_hp: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The dominant modality (higher mean validation accuracy of concat's unimodal head) x ``factor``."""
    concat = [r for r in records if r["method"] == "none"]
    score = {m: statistics.mean(r["metrics"]["validation"][f"accuracy_{m}"] for r in concat) for m in modalities}
    dominant = max(modalities, key=lambda m: score[m])
    out: Dict[str, Any] = {"fixed_multipliers": [factor if m == dominant else 1.0 for m in modalities]}
    if concat_hp and "learning_rate" in concat_hp.get("best", {}):
        out["learning_rate"] = concat_hp["best"]["learning_rate"]
    return out

