# An interrupted job leaves Lightning's last checkpoint in results/{dataset}/{model}/.train-<key>/
# (not a declared output, so Snakemake keeps it when the job fails); rerunning the job resumes
# from it when the input and settings are unchanged (docs/data-format.md).
rule train:
    input:
        "results/{dataset}/masked.h5ad",
    output:
        model="results/{dataset}/{model}/model.ckpt",
        metrics=report(
            "results/{dataset}/{model}/metrics.csv",
            caption="../report/metrics.rst",
            category="{dataset}",
            subcategory="{model}",
        ),
    params:
        family=lambda wildcards: model_params(wildcards)[0],
        hparams=lambda wildcards: model_params(wildcards)[1],
        trainer=model_trainer,
        seed=dataset_seed,
        launch=train_launcher,
    priority: PRIORITY_LONG
    log:
        "logs/{dataset}/{model}/train.log",
    threads: config.get("threads", {}).get("train", 1)  # 1: two jobs share 2 cores (bench/threads.py)
    resources:
        nodes=train_sbatch("nodes"),
        mpi=train_sbatch("mpi"),
        tasks_per_node=train_sbatch("tasks_per_node"),
        tasks=train_sbatch("tasks"),
        gpu=train_sbatch("gpu"),
        slurm_extra=train_sbatch("slurm_extra"),
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE {params.launch} omicsgen train --input {input:q} --outdir results/{wildcards.dataset}/{wildcards.model}"
        " --family {params.family} --params {params.hparams:q} --trainer {params.trainer:q}"
        " --seed {params.seed} > {log:q} 2>&1"
