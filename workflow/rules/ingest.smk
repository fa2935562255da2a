rule ingest:
    input:
        lambda wildcards: SHEET[wildcards.dataset]["path"],
    output:
        "results/{dataset}/ingested.h5ad",
    params:
        modality=lambda wildcards: modality(wildcards.dataset),
        format=lambda wildcards: sheet_option(wildcards.dataset, "format"),
        alphabet=lambda wildcards: sheet_option(wildcards.dataset, "alphabet"),
        orientation=lambda wildcards: sheet_option(wildcards.dataset, "orientation"),
        label=lambda wildcards: sheet_option(wildcards.dataset, "label"),
        values=lambda wildcards: sheet_option(wildcards.dataset, "values"),
        matrix=lambda wildcards: sheet_option(wildcards.dataset, "matrix"),
    priority: PRIORITY_PREPARE
    log:
        "logs/{dataset}/ingest.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen ingest --input {input:q} --output {output:q} --dataset {wildcards.dataset}"
        " --modality {params.modality} {params.format} {params.alphabet} {params.orientation} {params.label} {params.values}"
        " {params.matrix} > {log:q} 2>&1"
