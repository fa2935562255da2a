rule evaluate:
    input:
        data="results/{dataset}/masked.h5ad",
        imputed="results/{dataset}/{model}/imputed.h5ad",
        samples="results/{dataset}/{model}/samples.h5ad",
        model="results/{dataset}/{model}/model.ckpt",
    output:
        report(
            "results/{dataset}/{model}/scores.json",
            caption="../report/scores.rst",
            category="{dataset}",
            subcategory="{model}",
        ),
    params:
        seed=dataset_seed,
    log:
        "logs/{dataset}/{model}/evaluate.log",
    threads: 2
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "OMP_NUM_THREADS={threads} omicsgen evaluate --input {input.data:q} --imputed {input.imputed:q} --samples {input.samples:q}"
        " --checkpoint {input.model:q} --output {output:q} --seed {params.seed} > {log:q} 2>&1"
