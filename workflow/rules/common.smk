import json
import re
import shlex

import pandas as pd
import yaml
from snakemake.logging import logger
from snakemake.utils import validate

from omicsgen.choose import as_records, choose_models, chosen, parse_sheet_models
from omicsgen import slurm, worker
from omicsgen.models.catalog import CATALOG, can
from omicsgen.sweep import expand_models

# A user's --configfile replaces these sections whole instead of merging into the defaults key by
# key: a merged `models:` would bring back every default model the user left out. To add models to
# the defaults instead, list them under `extra_models:`.
REPLACED_SECTIONS = ("models", "paper")
for user_file in workflow.overwrite_configfiles or []:
    user_config = yaml.safe_load(open(user_file)) or {}
    for section in REPLACED_SECTIONS:
        if section in user_config:
            config[section] = user_config[section]
config["models"] = {**config["models"], **config.pop("extra_models", {})}


onstart:
    # Local jobs fork from one process that imported torch & co. once (omicsgen.worker).
    if workflow.local_exec and config.get("worker", True):
        worker.start()

validate(config, schema="../schemas/config.schema.yaml")

# The order jobs start in when they wait for cores (each rule's `priority`): every dataset's
# preparation first, then the long jobs (training, baselines), then the short ones after them. Left
# to itself the scheduler started an 87 s LSTM 373 s into a 479 s default run, and one core idled
# for its last 54 s (bench/figures.md, issue 13).
PRIORITY_PREPARE = 2
PRIORITY_LONG = 1


def read_sheet(path):
    """The dataset sheet, checked row by row: an error names the sheet file and the row."""
    try:
        sheet = pd.read_csv(path, sep="\t", dtype=str, comment="#").fillna("")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"dataset sheet {path}: cannot be read as a tab-separated table: {err}") from None
    missing = [c for c in ("dataset", "modality", "path") if c not in sheet.columns]
    if missing:
        raise ValueError(f"dataset sheet {path}: no column {', '.join(map(repr, missing))} "
                         f"(the header has {', '.join(sheet.columns)}; columns are tab-separated)")
    try:
        validate(sheet, schema="../schemas/datasets.schema.yaml")  # every row; one call, as it loads the schema
    except Exception as err:
        raise ValueError(f"dataset sheet {path}: {sheet_error(sheet, err)}") from None
    duplicated = sheet["dataset"][sheet["dataset"].duplicated()]
    if len(duplicated):
        raise ValueError(f"dataset sheet {path}: row {duplicated.index[0] + 2}: dataset id '{duplicated.iloc[0]}' is used twice")
    return sheet.set_index("dataset", drop=False)


def sheet_error(sheet, err):
    """Snakemake's validation error, reduced to the first bad row (line numbers count the header as 1)."""
    from jsonschema import Draft202012Validator

    schema = yaml.safe_load(open(workflow.source_path("../schemas/datasets.schema.yaml")))
    for index, row in enumerate(sheet.to_dict("records")):
        problem = next(iter(Draft202012Validator(schema).iter_errors(row)), None)
        if problem is not None:
            where = ".".join(map(str, problem.path)) or "row"
            return f"row {index + 2} (dataset '{row.get('dataset', '')}'): {where}: {problem.message}"
    return str(err).splitlines()[0]


DATASETS = read_sheet(config["datasets"])
MODELS = expand_models(config["models"])  # a list of values is a sweep: one model per value
for name, spec in MODELS.items():
    if spec["family"] not in CATALOG:
        raise ValueError(f"config models.{name}: unknown family '{spec['family']}' (known: {', '.join(CATALOG)})")
for row_number, (name, cell) in enumerate(DATASETS.get("models", pd.Series(dtype=str)).items(), start=2):
    unknown = sorted(set(parse_sheet_models(cell) or []) - set(MODELS))
    if unknown:
        raise ValueError(f"dataset sheet {config['datasets']}: row {row_number} (dataset '{name}'): models column names "
                         f"{', '.join(unknown)}, not configured (configured: {', '.join(MODELS)})")


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS.index)),
    model="|".join(map(re.escape, MODELS)) or "^$",


SHEET = DATASETS.to_dict("index")  # dataset -> {column: value}: input functions run per job, and .loc is slow


def modality(dataset):
    return SHEET[dataset]["modality"]


def dataset_seed(wildcards):
    """The sheet's `seed` for this dataset (repeats of one experiment differ only in it), else the config's."""
    value = SHEET[wildcards.dataset].get("seed", "")
    return int(value) if value else config["seed"]


def sheet_option(dataset, column):
    """An optional sheet column as a CLI option, or nothing when the cell is empty."""
    value = SHEET[dataset].get(column, "")
    return f"--{column} {shlex.quote(value)}" if value else ""


CHOICES = {}  # dataset -> [Choice]: input functions ask many times, the facts are read once


def model_choices(dataset):
    """Every configured model with whether it runs on this dataset and why (`omicsgen.choose`), from
    the facts that preprocess recorded: a checkpoint, so the DAG grows once they exist."""
    if dataset not in CHOICES:
        facts_path = checkpoints.preprocess.get(dataset=dataset).output.facts
        with open(facts_path) as handle:
            facts = json.load(handle)
        asked = parse_sheet_models(SHEET[dataset].get("models", ""))
        CHOICES[dataset] = choose_models(MODELS, facts, dataset, asked)
        runs = chosen(CHOICES[dataset])
        logger.info(f"{dataset}: models {', '.join(runs) or 'none'} (omicsgen.choose; the page says why)")
    return CHOICES[dataset]


def models_for(dataset):
    """The configured models that run on a dataset, chosen by what the data is (`model_choices`)."""
    return chosen(model_choices(dataset))


def choices_json(wildcards):
    return json.dumps(as_records(model_choices(wildcards.dataset)), sort_keys=True)


def scoring_options():
    """The config's `evaluate:` section as CLI options, sorted: params are compared as text, and a
    config re-saved with its keys in another order must not rerun anything."""
    return " ".join(f"--{k.replace('_', '-')} {'none' if v is None else v}" for k, v in sorted(config.get("evaluate", {}).items()))


def model_params(wildcards):
    """(family, hyper-parameters as JSON) of a configured model, its trainer overrides left out."""
    spec = {k: v for k, v in MODELS[wildcards.model].items() if k not in ("trainer", "datasets", "when")}
    return spec.pop("family"), json.dumps(spec, sort_keys=True)


def model_trainer(wildcards):
    """The trainer settings for one model: the global ones, updated by the model's own `trainer:`."""
    overrides = MODELS[wildcards.model].get("trainer", {})
    return json.dumps({**config["trainer"], **overrides}, sort_keys=True)


def family_can(model, dataset, action):
    """Whether a configured model can `sample` or `impute` on a dataset's modality (GAIN cannot
    sample, a GAN cannot impute): its generate / impute jobs exist only when it can."""
    return can(MODELS[model]["family"], modality(dataset), action)


def model_products(wildcards):
    """{"imputed": path, "samples": path}: the model's outputs that its family can make."""
    folder = f"results/{wildcards.dataset}/{wildcards.model}"
    products = {"imputed": f"{folder}/imputed.h5ad", "samples": f"{folder}/samples.h5ad"}
    actions = {"imputed": "impute", "samples": "sample"}
    return {key: path for key, path in products.items() if family_can(wildcards.model, wildcards.dataset, actions[key])}


def dataset_products(name):
    """An input function: `name` (imputed.h5ad or samples.h5ad) of every model of a dataset that makes it."""
    action = "impute" if name.startswith("imputed") else "sample"
    return lambda wildcards: [
        f"results/{wildcards.dataset}/{model}/{name}"
        for model in models_for(wildcards.dataset)
        if family_can(model, wildcards.dataset, action)
    ]


def all_model_scores(wildcards):
    return [f"results/{d}/{m}/scores.json" for d in DATASETS.index for m in models_for(d)]


def dataset_scores(wildcards):
    return expand("results/{dataset}/{model}/scores.json", dataset=wildcards.dataset, model=models_for(wildcards.dataset))


def complete_method(wildcards):
    """config complete.method for this dataset: one name for all, or {dataset: name} (auto elsewhere)."""
    method = config.get("complete", {}).get("method", "auto")
    return method.get(wildcards.dataset, "auto") if isinstance(method, dict) else method


def completed_table(wildcards):
    """completed.h5ad for the dataset's page (sequences have none: complete fills tables)."""
    return [] if modality(wildcards.dataset) == "sequence" else f"results/{wildcards.dataset}/completed.h5ad"


def get_final_output():
    paper = [f"results/papers/{config['paper']['name']}.html"] if "paper" in config else []  # config/papers/*.yaml
    # the user's own table back, native NAs filled by the method best on validation entries (omicsgen.complete)
    completed = [f"results/{d}/completed.h5ad" for d in DATASETS.index if modality(d) != "sequence"]
    return ["results/report.html"] + [f"results/{d}/report.html" for d in DATASETS.index] + completed + paper


# Several devices or nodes (`trainer: {devices: N, num_nodes: M, strategy: ddp}`): on SLURM the job asks
# for M nodes of N tasks (one rank a device) and N GPUs each, and its shell starts the ranks with srun;
# run locally, Lightning starts them itself (src/omicsgen/slurm.py, docs/cluster.md).
def train_layout(wildcards):
    return slurm.layout(json.loads(model_trainer(wildcards)))


def train_sbatch(key):
    """A resource of the train job for the SLURM executor plugin (None: not asked for)."""
    return lambda wildcards: slurm.sbatch_resources(train_layout(wildcards))[key]


def train_launcher(wildcards, threads, resources):
    """`srun ...` inside a SLURM job of several ranks, with the CPUs sbatch gave each task."""
    return slurm.srun_prefix(train_layout(wildcards), resources.get("cpus_per_task") or threads)
