"""What one training job asks SLURM for, from the model's trainer settings (workflow/rules/train.smk).

Lightning runs one process (rank) per device: `devices` on each of `num_nodes` nodes. On SLURM the
ranks must come from `srun`, one task each: Lightning's SLURM environment reads the rank from
SLURM_PROCID and stops when SLURM's tasks per node differ from `devices` (or waits for ranks that
never start). So a job of more than one rank asks sbatch for `--nodes=M --ntasks-per-node=N`
(`--gpus-per-node=N` on GPUs), and is marked `mpi` so that snakemake-executor-plugin-slurm runs its
shell as it is (not under `srun -n1`); the shell then starts the ranks with `srun_prefix`.
A one-rank job keeps the plugin's usual `srun -n1` and asks for one GPU (`--gpus=1`).
Torch-free: the DAG imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Accelerators that run on GPUs; "auto" picks the GPU that a cluster job is given.
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


@dataclass(frozen=True)
class Layout:
    tasks_per_node: int  # = devices: one rank a device
    nodes: int
    gpus_per_node: int  # 0 on CPUs

    @property
    def ranks(self) -> int:
        return self.tasks_per_node * self.nodes


def devices_per_node(devices) -> int:
    """How many ranks Lightning starts on a node for `devices`: a count (2, "2"), device ids
    ("0,1"), or "auto" / -1, which SLURM cannot size in advance: one task (a 1-GPU job, as before)."""
    if isinstance(devices, bool):
        return 1
    if isinstance(devices, int):
        return devices if devices > 0 else 1
    text = str(devices).strip()
    if text.isdigit():
        return max(1, int(text))
    ids = [part for part in text.split(",") if part.strip()]
    if len(ids) > 1 or (ids and text.endswith(",")):  # "0,1" or "1," (Lightning: device ids)
        return len(ids)
    return 1


def layout(trainer: dict) -> Layout:
    """The job's shape from the trainer settings (devices, num_nodes, accelerator)."""
    per_node = devices_per_node(trainer.get("devices", 1))
    nodes = int(trainer.get("num_nodes", 1) or 1)
    gpus = per_node if str(trainer.get("accelerator", "auto")) in GPU_ACCELERATORS else 0
    return Layout(per_node, nodes, gpus)


def sbatch_resources(shape: Layout) -> dict:
    """Snakemake resources for the SLURM executor plugin (None: not set). The plugin maps
    `nodes` to --nodes, `tasks_per_node` to --ntasks-per-node and `tasks` to --ntasks (both only
    with `mpi`, and only above 1), `gpu` to --gpus and `slurm_extra` as it is."""
    if shape.ranks == 1:
        return {"nodes": None, "mpi": None, "tasks_per_node": None, "tasks": None,
                "gpu": 1 if shape.gpus_per_node else None, "slurm_extra": None}
    return {
        "nodes": shape.nodes,
        "mpi": "srun",
        # the plugin refuses tasks_per_node=1 for an mpi job: one device on each of M nodes is --ntasks=M
        "tasks_per_node": shape.tasks_per_node if shape.tasks_per_node > 1 else None,
        "tasks": shape.nodes if shape.tasks_per_node == 1 else None,
        "gpu": None,  # --gpus counts the whole job; each node needs its own N
        "slurm_extra": f"--gpus-per-node={shape.gpus_per_node}" if shape.gpus_per_node else None,
    }


def srun_prefix(shape: Layout, cpus_per_task: int) -> str:
    """The shell words that start the ranks inside a SLURM job; empty outside one (Lightning then
    starts the ranks itself) and for one rank (the plugin already ran the job under srun -n1).
    The plugin drops the job's SLURM_NTASKS & co. from the job's environment, so every setting
    is given here; --ntasks-per-node also sets the SLURM_NTASKS_PER_NODE Lightning checks."""
    if shape.ranks == 1:
        return ""
    srun = (f"srun --nodes={shape.nodes} --ntasks-per-node={shape.tasks_per_node} --cpus-per-task={cpus_per_task}"
            " --kill-on-bad-exit=1")  # one rank failing ends the others (no rank waits forever)
    return "${SLURM_JOB_ID:+" + srun + "}"
