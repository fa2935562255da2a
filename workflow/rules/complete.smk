rule complete:
    # The user's table back with its native NAs filled by the method best on the train and val
    # rows' held-out entries (a model or a baseline), refit on every row (omicsgen.complete).
    input:
        data="results/{dataset}/ingested.h5ad",
        masked="results/{dataset}/masked.h5ad",
        imputed=dataset_products("imputed.h5ad"),
        models=lambda wildcards: [p.replace("imputed.h5ad", "model.ckpt") for p in dataset_products("imputed.h5ad")(wildcards)],
        metrics=lambda wildcards: [p.replace("imputed.h5ad", "metrics.csv") for p in dataset_products("imputed.h5ad")(wildcards)],
    output:
        report("results/{dataset}/completed.h5ad", caption="../report/completed.rst", category="{dataset}"),
    params:
        trainer=lambda wildcards: json.dumps({k: config["trainer"][k] for k in ("accelerator", "devices", "precision")}, sort_keys=True),
        n_draws=config.get("impute", {}).get("n_draws", 20),
        seed=dataset_seed,
        # the slow baselines fit on as many train rows here as in `baselines` (evaluate.max_train_rows)
        max_train_rows=config.get("evaluate", {}).get("max_train_rows", 2000) or "none",
        method=complete_method,
    log:
        "logs/{dataset}/complete.log",
    # 1 as for the other rules: with 2 spinning OpenMP threads beside other jobs, one unseen table's
    # complete took 306 s CPU in the unseen-data test against 21 s with 1 thread (bench/figures.md)
    threads: config.get("threads", {}).get("complete", 1)
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE omicsgen complete --input {input.data:q} --masked {input.masked:q}"
        " --imputed {input.imputed:q} --trainer {params.trainer:q} --n-draws {params.n_draws}"
        " --seed {params.seed} --max-train-rows {params.max_train_rows} --method {params.method:q} --output {output:q} > {log:q} 2>&1"
