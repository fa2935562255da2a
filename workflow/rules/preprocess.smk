rule preprocess:
    input:
        "results/{dataset}/ingested.h5ad",
    output:
        "results/{dataset}/prepared.h5ad",
    params:
        preprocess=lambda wildcards: json.dumps(config["preprocess"].get(modality(wildcards.dataset), {})),
        split=json.dumps(config["split"]),
        seed=dataset_seed,
    log:
        "logs/{dataset}/preprocess.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen preprocess --input {input:q} --output {output:q} --params {params.preprocess:q}"
        " --split {params.split:q} --seed {params.seed} > {log:q} 2>&1"
