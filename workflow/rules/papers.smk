# Paper reproductions (config/papers/<name>.yaml): the repeats' scores beside the published figures.


rule paper_table:
    input:
        "resources/{table}.csv",
    output:
        "results/papers/inputs/{table}.h5ad",
    wildcard_constraints:
        table="[A-Za-z0-9_]+",
    log:
        "logs/papers/{table}.log",
    conda:
        "../../envs/omicsgen.yaml"
    shell:
        "omicsgen papers table --input {input:q} --output {output:q} > {log:q} 2>&1"


if "paper" in config:

    rule paper:
        input:
            scores=all_model_scores,
            baselines=expand("results/{dataset}/baselines/scores.json", dataset=DATASETS.index),
        output:
            html=report(
                f"results/papers/{config['paper']['name']}.html",
                caption="../report/papers.rst",
                category="Papers",
            ),
            json=report(
                f"results/papers/{config['paper']['name']}.json",
                caption="../report/papers.rst",
                category="Papers",
            ),
        params:
            paper=json.dumps(config["paper"], sort_keys=True),
        log:
            f"logs/papers/{config['paper']['name']}.log",
        conda:
            "../../envs/omicsgen.yaml"
        shell:
            "omicsgen papers report --paper {params.paper:q} --scores {input.scores:q} --baselines {input.baselines:q}"
            " --html {output.html:q} --json {output.json:q} > {log:q} 2>&1"
