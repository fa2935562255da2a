rule mask:
    input:
        "results/{dataset}/prepared.h5ad",
    output:
        "results/{dataset}/masked.h5ad",
    params:
        rate=config["mask"]["rate"],
        mechanism=config["mask"]["mechanism"],
        span_length=config["mask"].get("span_length", 10),
        # expression and time courses only: a sequence's tokens have no zeros to spare
        nonzero_only=lambda wildcards: "--nonzero-only"
        if config["mask"].get("nonzero_only", False) and modality(wildcards.dataset) != "sequence"
        else "",
        seed=dataset_seed,
    priority: PRIORITY_PREPARE
    log:
        "logs/{dataset}/mask.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen mask --input {input:q} --output {output:q} --rate {params.rate}"
        " --mechanism {params.mechanism} --span-length {params.span_length} --seed {params.seed} {params.nonzero_only} > {log:q} 2>&1"
