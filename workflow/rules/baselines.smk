rule baselines:
    input:
        "results/{dataset}/masked.h5ad",
    output:
        scores=report(
            "results/{dataset}/baselines/scores.json",
            caption="../report/baselines.rst",
            category="{dataset}",
            subcategory="baselines",
        ),
        # the real-data reference of generation, the same for every model: computed here once, read by evaluate
        reference="results/{dataset}/baselines/reference.json",
    params:
        n_samples=config["generate"]["n_samples"],
        seed=dataset_seed,
        # the config's `evaluate:` section (max_rows, max_train_rows, bootstrap, c2st_rows, pca_scale); the CLI's defaults match config.yaml
        scoring=scoring_options(),
    priority: PRIORITY_LONG
    log:
        "logs/{dataset}/baselines.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen baselines --input {input:q} --output {output.scores:q} --reference {output.reference:q} --n-samples {params.n_samples} --seed {params.seed} {params.scoring} > {log:q} 2>&1"
