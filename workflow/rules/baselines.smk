rule baselines:
    input:
        "results/{dataset}/masked.h5ad",
    output:
        report(
            "results/{dataset}/baselines/scores.json",
            caption="../report/baselines.rst",
            category="{dataset}",
            subcategory="baselines",
        ),
    params:
        n_samples=config["generate"]["n_samples"],
        seed=dataset_seed,
    log:
        "logs/{dataset}/baselines.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen baselines --input {input:q} --output {output:q} --n-samples {params.n_samples} --seed {params.seed} > {log:q} 2>&1"
