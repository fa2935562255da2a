rule evaluate:
    input:
        unpack(model_products),  # imputed / samples: only what the model's family can make
        data="results/{dataset}/masked.h5ad",
        model="results/{dataset}/{model}/model.ckpt",
        reference="results/{dataset}/baselines/reference.json",
    output:
        report(
            "results/{dataset}/{model}/scores.json",
            caption="../report/scores.rst",
            category="{dataset}",
            subcategory="{model}",
        ),
    params:
        products=lambda wildcards: " ".join(f"--{key} {shlex.quote(path)}" for key, path in model_products(wildcards).items()),
        seed=dataset_seed,
        # the config's `evaluate:` section (max_rows, max_train_rows, bootstrap, c2st_rows, pca_scale); the CLI's defaults match config.yaml
        scoring=scoring_options(),
    log:
        "logs/{dataset}/{model}/evaluate.log",
    threads: config.get("threads", {}).get("evaluate", 1)  # 1: two jobs share 2 cores (bench/threads.py)
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE omicsgen evaluate --input {input.data:q} {params.products}"
        " --checkpoint {input.model:q} --reference {input.reference:q} --output {output:q} --seed {params.seed} {params.scoring} > {log:q} 2>&1"
