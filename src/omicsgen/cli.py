"""The `omicsgen` command: one subcommand a pipeline stage, each a thin shell over a package function."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

from .errors import InputError


def _json(text: str) -> dict:
    """Rules pass config sections as JSON; a bad one is a wiring error, so say which."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _ingest(a):
    from .ingest import ingest

    ingest(a.input, a.output, a.dataset, a.modality, a.format, a.alphabet, a.orientation, a.label, a.values, a.matrix)


def _preprocess(a):
    from .preprocess import preprocess

    preprocess(a.input, a.output, a.params, a.split, a.seed, facts_path=a.facts)


def _mask(a):
    from .mask import mask

    mask(a.input, a.output, a.rate, a.mechanism, a.seed, a.span_length, a.nonzero_only)


def _train(a):
    from .train import train

    train(a.input, a.outdir, a.family, a.params, a.trainer, a.seed)


def _generate(a):
    from .generate import generate

    generate(a.input, a.checkpoint, a.output, a.n_samples, a.seed, fasta_path=a.fasta,
             whole_numbers=not a.keep_fractions, train_range=a.train_range,
             levels=not a.any_value)


def _impute(a):
    from .impute import impute

    impute(a.input, a.checkpoint, a.output, a.seed, n_draws=a.n_draws)


def _complete(a):
    from pathlib import Path as _P

    from .complete import complete

    runs = {_P(p).parent.name: {"imputed": p, "checkpoint": str(_P(p).parent / "model.ckpt")} for p in a.imputed}
    complete(a.input, a.masked, runs, a.output, a.seed, trainer=a.trainer, n_draws=a.n_draws, method=a.method,
             max_train_rows=a.max_train_rows)


def _evaluate(a):
    from .evaluate import evaluate

    evaluate(a.input, a.imputed, a.samples, a.output, checkpoint=a.checkpoint, seed=a.seed, settings=_scoring(a),
             reference_path=a.reference)


def _baselines(a):
    from .evaluate import baselines

    baselines(a.input, a.output, seed=a.seed, n_samples=a.n_samples, settings=_scoring(a), reference_path=a.reference)


def _scoring(a):
    from .evaluate.scores import Settings

    return Settings(max_rows=a.max_rows, max_train_rows=a.max_train_rows, bootstrap=a.bootstrap, c2st_rows=a.c2st_rows,
                    pca_scale=a.pca_scale)


def _rows(text: str) -> int | None:
    """A row count, or none / null for no limit."""
    return None if text.lower() in ("none", "null") else int(text)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _scoring_options(p) -> None:
    """The config's `evaluate:` section, shared by evaluate and baselines (docs/scores.md)."""
    p.add_argument("--max-rows", type=_rows, default=10000, help="test rows scored, a seeded subsample above it (none = all)")
    p.add_argument("--max-train-rows", type=_rows, default=2000, help="training rows the slow baselines fit on (none = all)")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples of the 95%% intervals of headline scores (0 = none)")
    p.add_argument("--c2st-rows", type=_non_negative, default=500,
                   help="rows a side the c2st's averaged draws target on a small test split (0 = one draw)")
    # scoring.PCA_SCALES and MIXED_UNITS_SPREAD, written out: importing scoring would slow every --help
    p.add_argument("--pca-scale", choices=("auto", "raw", "zscore"), default="auto",
                   help="features of the PCA that MMD and the c2st work in: raw, z-scored, or auto (z-scored when "
                        "their sds span over 20x their median: mixed units)")


def _report(a):
    from .report import dataset_report, leaderboard

    if a.leaderboard:
        leaderboard(a.scores, a.baselines, a.output)
    else:
        model_dirs = {Path(p).parent.name: Path(p).parent for p in a.scores}
        dataset_report(a.dataset, a.input, model_dirs, a.baselines[0], a.output, choices=a.choices,
                       completed=next((path for path in a.completed if path), None))


def _papers(a):
    from .papers import paper_report, table_to_h5ad

    if a.action == "table":
        table_to_h5ad(a.input, a.output, a.label)
    else:
        paper_report(a.paper, a.scores, a.baselines, a.html, a.json)


def _provenance(a):
    from .provenance import describe

    for path in a.files:
        print(describe(path))


def _models(a):
    from .choose import choose_models, describe_rule
    from .models.registry import FAMILIES

    print("# families: the modalities each takes and its hyper-parameters' defaults")
    for name, family in FAMILIES.items():  # one line per model class: a family may differ by modality
        for cls, modalities in family.distinct_classes().items():
            print(f"{name}\tmodalities: {', '.join(modalities)}\tdefaults: {json.dumps(cls.defaults)}")
    if a.config:
        models = _configured_models(a.config)
        print(f"\n# the models of {a.config} and when each runs (omicsgen.choose: modality, what the model needs, when:, datasets:)")
        print("\n".join(describe_rule(models)))
        for facts_path in a.facts:
            with open(facts_path) as handle:
                facts = json.load(handle)
            print(f"\n# on {facts_path}: {json.dumps(facts, sort_keys=True)}")
            for c in choose_models(models, facts, dataset=Path(facts_path).parent.name):
                print(f"{c.model}\t{'runs' if c.chosen else 'skipped'}\t{c.reason}")


def _configured_models(path) -> dict:
    import yaml

    from .sweep import expand_models

    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    return expand_models({**config.get("models", {}), **config.get("extra_models", {})})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omicsgen", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name, func, help, inputs=True, output=True, seed=False):
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        if inputs:
            p.add_argument("--input", required=True, help="input file")
        if output:
            p.add_argument("--output", required=True, help="output file (written atomically)")
        if seed:
            p.add_argument("--seed", type=int, default=0)
        return p

    p = stage("ingest", _ingest, "read a raw file into AnnData")
    p.add_argument("--dataset", required=True)
    p.add_argument("--modality", required=True)
    p.add_argument("--format", default=None, help="default: from the file name")
    p.add_argument("--alphabet", default="auto")
    p.add_argument("--orientation", default="auto")
    p.add_argument("--values", default="auto", help="auto, counts, estimated_counts (rounded), intensities (log2-transformed) or normalised (expression tables)")
    p.add_argument("--matrix", default="X", help="h5ad / zarr: X, raw or a layer's name")
    p.add_argument("--label", default=None, help="regex with one group over FASTA headers, or an annotation column")

    p = stage("preprocess", _preprocess, "QC, normalise, select features, split", seed=True)
    p.add_argument("--params", type=_json, default={})
    p.add_argument("--split", type=_json, default={"val": 0.1, "test": 0.2})
    p.add_argument("--facts", default=None, help="also write the facts that choose the models (JSON) here")

    p = stage("mask", _mask, "hold out entries for imputation scoring", seed=True)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--mechanism", default="mcar")
    p.add_argument("--span-length", type=int, default=10, help="positions a span covers (mechanism span)")
    p.add_argument("--nonzero-only", action="store_true", help="hold out only nonzero observed entries")

    p = stage("train", _train, "train one model", output=False, seed=True)
    p.add_argument("--outdir", required=True, help="gets model.ckpt and metrics.csv")
    p.add_argument("--family", required=True)
    p.add_argument("--params", type=_json, default={})
    p.add_argument("--trainer", type=_json, default={})

    p = stage("generate", _generate, "sample synthetic data from a model", seed=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--fasta", default=None, help="also write sequences as FASTA here")
    p.add_argument("--keep-fractions", action="store_true",
                   help="do not round the samples of features whose train values are all whole numbers")
    p.add_argument("--train-range", action="store_true",
                   help="clip samples to each feature's range in the train rows (no negative abundance)")
    p.add_argument("--any-value", action="store_true",
                   help="do not snap the samples of features with a few distinct train values (codes, grades) "
                        "to the nearest of those values")

    p = stage("impute", _impute, "fill held-out and missing entries", seed=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n-draws", type=int, default=20,
                   help="imputations drawn for uncertainty when the family can draw them (0: none)")

    p = stage("complete", _complete, "the input with its native NAs filled by the method best on held-out entries of the train and val rows", seed=True)
    p.add_argument("--masked", required=True, help="masked.h5ad (the held-out entries of its train and val rows choose the method)")
    p.add_argument("--imputed", nargs="*", default=[], help="each model's imputed.h5ad (model.ckpt beside it)")
    p.add_argument("--trainer", type=_json, default={}, help="trainer settings for refitting a chosen model")
    p.add_argument("--n-draws", type=int, default=20)
    p.add_argument("--method", default="auto", help="a model or baseline name instead of the choice on held-out entries")
    p.add_argument("--max-train-rows", type=_rows, default=2000,
                   help="training rows the slow baselines fit on, and the train rows scored (evaluate.max_train_rows)")

    p = stage("evaluate", _evaluate, "score a model's imputations and samples", seed=True)
    p.add_argument("--imputed", default=None, help="imputed.h5ad (left out for a family that cannot impute)")
    p.add_argument("--samples", default=None, help="samples.h5ad (left out for a family that cannot sample)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--reference", default=None,
                   help="the dataset's reference.json (written by baselines): its real-data reference is copied, not recomputed")
    _scoring_options(p)

    p = stage("baselines", _baselines, "score the classical baselines", seed=True)
    p.add_argument("--n-samples", type=int, default=1000, help="rows each generation baseline draws")
    p.add_argument("--reference", default=None,
                   help="also write the real-data reference of generation here, which every model's evaluate reads")
    _scoring_options(p)

    p = stage("report", _report, "write an HTML report", inputs=False)
    p.add_argument("--input", default=None, help="masked.h5ad of the dataset")
    p.add_argument("--dataset", default=None)
    p.add_argument("--scores", nargs="*", default=[], help="scores.json of each model")
    p.add_argument("--baselines", nargs="*", default=[], help="baselines/scores.json")
    p.add_argument("--leaderboard", action="store_true", help="the summary page over all datasets")
    p.add_argument("--choices", type=json.loads, default=None,
                   help="JSON: the configured models, whether each runs on the dataset and why (omicsgen.choose)")
    p.add_argument("--completed", nargs="*", default=[], help="completed.h5ad of the dataset (none for sequences)")

    p = sub.add_parser("papers", help="published results beside ours: a paper config's page, or its input table")
    p.set_defaults(func=_papers)
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("report", help="aggregate the repeats' scores and write the paper's page and JSON")
    q.add_argument("--paper", type=_json, required=True, help="the config's paper section as JSON")
    q.add_argument("--scores", nargs="*", default=[], help="scores.json of each model and repeat")
    q.add_argument("--baselines", nargs="*", default=[], help="baselines/scores.json of each repeat")
    q.add_argument("--html", required=True)
    q.add_argument("--json", required=True)
    q = actions.add_parser("table", help="a CSV with text annotation columns as .h5ad (text columns to obs)")
    q.add_argument("--input", required=True)
    q.add_argument("--output", required=True)
    q.add_argument("--label", default=None, help="a text column that must be present (the sheet's label)")

    p = sub.add_parser("provenance", help="print how an output was made (config slice, input checksums, versions, seed)")
    p.add_argument("files", nargs="+", help=".h5ad outputs or model.ckpt files")
    p.set_defaults(func=_provenance)

    p = sub.add_parser("models", help="list the model families, their modalities and defaults; with --config, "
                       "which configured model runs on which data and why")
    p.add_argument("--config", default=None, help="a config file: print its models and the rule that picks them")
    p.add_argument("--facts", nargs="*", default=[], help="results/<dataset>/facts.json: print each model's choice for that data")
    p.set_defaults(func=_models)
    return parser


# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _reuse_freed_memory() -> None:
    """Let glibc keep freed blocks of up to 128 MB for reuse. By default a block over 32 MB is
    mapped from the kernel and unmapped on free, so torch's per-step buffers of that size (an
    LSTM's over 200 positions) were faulted in afresh on every step: a fifth of that job's CPU
    (bench/figures.md). Elsewhere (macOS, musl) there is no mallopt and nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    if mallopt(M_MMAP_THRESHOLD, 128 << 20):  # 0: this glibc caps the threshold; keep its own
        mallopt(M_TRIM_THRESHOLD, 256 << 20)


def main(argv: list[str] | None = None) -> int:
    _reuse_freed_memory()
    # One OpenMP / BLAS thread unless the caller says otherwise (the rules that run torch pass
    # `threads:`): threads that spin on cores shared with other jobs slow a job down 7x (bench/threads.py).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        args.func(args)
    except InputError as err:
        print(f"omicsgen {args.command}: error: {err}", file=sys.stderr)
        return 2
    _log_cost(args.command, started)
    return 0


def _log_cost(command: str, started: float) -> None:
    """One line with the job's CPU seconds (imports included, unless forked from the worker;
    bench/pipeline.py reads it)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    worker = sys.modules.get("omicsgen.worker")
    where = " (in the run's worker: imports not counted; setting: worker)" if getattr(worker, "forked", False) else ""
    logging.getLogger("omicsgen").info("omicsgen %s finished in %.1f s wall, %.1f s CPU%s", command,
                                       time.perf_counter() - started, cpu, where)


def run() -> None:
    """The `omicsgen` command: `main`, then leave without tearing the interpreter down. Freeing
    torch's and Lightning's modules at exit cost 1.25 s CPU a GAIN train job and 0.57 s an impute
    or generate job (bench/figures.md); every output is closed by then, so only the streams and
    logs need flushing.
    An uncaught error still exits the usual way, with its traceback; so does a run under a
    profiler or coverage tracer, which write their data at exit."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as `main` sets it, so a worker's jobs match
    code = None
    if os.environ.get("OMICSGEN_WORKER") and sys.getprofile() is None and sys.gettrace() is None:
        from .worker import run_in_worker

        code = run_in_worker(sys.argv[1:])
    if code is None:
        code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
