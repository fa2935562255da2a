import json
import re
import shlex

import pandas as pd
from snakemake.utils import validate

from omicsgen.models.registry import FAMILIES
from omicsgen.sweep import expand_models


validate(config, schema="../schemas/config.schema.yaml")

DATASETS = (
    pd.read_csv(config["datasets"], sep="\t", dtype=str, comment="#")
    .fillna("")
    .set_index("dataset", drop=False)
)
validate(DATASETS.reset_index(drop=True), schema="../schemas/datasets.schema.yaml")  # every row; one call, as it loads the schema
if DATASETS.index.duplicated().any():
    raise ValueError(f"{config['datasets']}: duplicate dataset ids: {sorted(set(DATASETS.index[DATASETS.index.duplicated()]))}")
MODELS = expand_models(config["models"])  # a list of values is a sweep: one model per value
for name, spec in MODELS.items():
    if spec["family"] not in FAMILIES:
        raise ValueError(f"config models.{name}: unknown family '{spec['family']}' (known: {', '.join(FAMILIES)})")


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


def models_for(dataset):
    """The configured models whose family accepts this dataset's modality (and, when the model
    lists `datasets:`, only those datasets)."""
    return [
        name
        for name, spec in MODELS.items()
        if modality(dataset) in FAMILIES[spec["family"]].modalities
        and dataset in spec.get("datasets", [dataset])
    ]


def model_params(wildcards):
    """(family, hyper-parameters as JSON) of a configured model, its trainer overrides left out."""
    spec = {k: v for k, v in MODELS[wildcards.model].items() if k not in ("trainer", "datasets")}
    return spec.pop("family"), json.dumps(spec, sort_keys=True)


def model_trainer(wildcards):
    """The trainer settings for one model: the global ones, updated by the model's own `trainer:`."""
    overrides = MODELS[wildcards.model].get("trainer", {})
    return json.dumps({**config["trainer"], **overrides}, sort_keys=True)


def family_can(model, dataset, action):
    """Whether a configured model can `sample` or `impute` on a dataset's modality (GAIN cannot
    sample, a GAN cannot impute): its generate / impute jobs exist only when it can."""
    cls = FAMILIES[MODELS[model]["family"]].model_class(modality(dataset))
    return getattr(cls, f"can_{action}")


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


def dataset_scores(wildcards):
    return expand("results/{dataset}/{model}/scores.json", dataset=wildcards.dataset, model=models_for(wildcards.dataset))


def get_final_output():
    paper = [f"results/papers/{config['paper']['name']}.html"] if "paper" in config else []  # config/papers/*.yaml
    return ["results/report.html"] + [f"results/{d}/report.html" for d in DATASETS.index] + paper
