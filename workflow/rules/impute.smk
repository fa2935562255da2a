rule impute:
    input:
        data="results/{dataset}/masked.h5ad",
        model="results/{dataset}/{model}/model.ckpt",
    output:
        "results/{dataset}/{model}/imputed.h5ad",
    params:
        seed=dataset_seed,
        # multiple imputation (families that can draw): draws per entry for intervals and calibration
        n_draws=config.get("impute", {}).get("n_draws", 20),
    log:
        "logs/{dataset}/{model}/impute.log",
    threads: config.get("threads", {}).get("impute", 1)  # 1: two jobs share 2 cores (bench/threads.py)
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE omicsgen impute --input {input.data:q} --checkpoint {input.model:q} --output {output:q}"
        " --seed {params.seed} --n-draws {params.n_draws} > {log:q} 2>&1"
