# A checkpoint: which models run on a dataset follows from the facts it records (omicsgen.choose).
checkpoint preprocess:
    input:
        "results/{dataset}/ingested.h5ad",
    output:
        data="results/{dataset}/prepared.h5ad",
        facts="results/{dataset}/facts.json",
    params:
        preprocess=lambda wildcards: json.dumps(config["preprocess"].get(modality(wildcards.dataset), {}), sort_keys=True),
        split=json.dumps(config["split"], sort_keys=True),
        seed=dataset_seed,
    priority: PRIORITY_PREPARE
    log:
        "logs/{dataset}/preprocess.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen preprocess --input {input:q} --output {output.data:q} --facts {output.facts:q} --params {params.preprocess:q}"
        " --split {params.split:q} --seed {params.seed} > {log:q} 2>&1"
