"""omicsgen: deep generative models for omics data, as one reproducible Snakemake pipeline."""

__version__ = "0.1.0"
