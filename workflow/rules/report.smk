rule report_dataset:
    input:
        data="results/{dataset}/masked.h5ad",
        scores=dataset_scores,
        metrics=lambda wildcards: expand(
            "results/{dataset}/{model}/metrics.csv", dataset=wildcards.dataset, model=models_for(wildcards.dataset)
        ),
        # only the outputs each model's family can make (GAIN does not sample, a GAN does not impute)
        imputed=dataset_products("imputed.h5ad"),
        samples=dataset_products("samples.h5ad"),
        baselines="results/{dataset}/baselines/scores.json",
        completed=completed_table,  # which method filled the native NAs, and why: on the page
    output:
        report("results/{dataset}/report.html", caption="../report/dataset_report.rst", category="{dataset}"),
    params:
        choices=choices_json,  # which models ran and why: shown on the page
    log:
        "logs/{dataset}/report.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen report --dataset {wildcards.dataset} --input {input.data:q} --scores {input.scores:q}"
        " --baselines {input.baselines:q} --choices {params.choices:q} --completed {input.completed:q}"
        " --output {output:q} > {log:q} 2>&1"


rule report_leaderboard:
    input:
        scores=all_model_scores,
        baselines=expand("results/{dataset}/baselines/scores.json", dataset=DATASETS.index),
        pages=expand("results/{dataset}/report.html", dataset=DATASETS.index),
    output:
        report("results/report.html", caption="../report/leaderboard.rst", category="Leaderboard"),
    log:
        "logs/report.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen report --leaderboard --scores {input.scores:q} --baselines {input.baselines:q}"
        " --output {output:q} > {log:q} 2>&1"
