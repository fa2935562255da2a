rule generate:
    input:
        data="results/{dataset}/masked.h5ad",
        model="results/{dataset}/{model}/model.ckpt",
    output:
        samples="results/{dataset}/{model}/samples.h5ad",
    params:
        n_samples=config["generate"]["n_samples"],
        # features whose train values are all whole numbers (scores, codes, ages) get whole-number samples
        whole=lambda wildcards: "" if config["generate"].get("whole_numbers", True) else "--keep-fractions",
        # samples clipped to each feature's train range (no negative abundance, nothing past any seen)
        train_range=lambda wildcards: "--train-range" if config["generate"].get("train_range", False) else "",
        # features of a few distinct train values (codes, grades) get the nearest of those values
        levels=lambda wildcards: "" if config["generate"].get("levels", True) else "--any-value",
        seed=dataset_seed,
        # sequences are also written as FASTA, for tools outside omicsgen
        fasta=lambda wildcards: (
            f"--fasta results/{wildcards.dataset}/{wildcards.model}/samples.fasta"
            if modality(wildcards.dataset) == "sequence"
            else ""
        ),
    log:
        "logs/{dataset}/{model}/generate.log",
    threads: config.get("threads", {}).get("generate", 1)  # 1: two jobs share 2 cores (bench/threads.py)
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE omicsgen generate --input {input.data:q} --checkpoint {input.model:q} --output {output.samples:q}"
        " --n-samples {params.n_samples} --seed {params.seed} {params.fasta} {params.whole} {params.train_range} {params.levels} > {log:q} 2>&1"
