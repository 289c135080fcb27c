# MiniALBERT pipeline: teacher + corpus -> tokens -> distilled students -> fine-tuning -> summary.
#   snakemake --cores all                               # embedded offline default (config/config.yaml)
#   snakemake --cores all --configfile config/paper.yaml
#   snakemake --workflow-profile profiles/slurm ...     # the same rules on a SLURM cluster
# Rules only wire files to `minialbert <stage>`; the package does the work. Settings and their
# defaults: src/minialbert/config.schema.yaml. Threads, memory, runtime, GPUs: profiles/.

from snakemake.utils import min_version, validate

from minialbert.settings import SCHEMA_PATH

min_version("9.0")


# A --configfile replaces the embedded default rather than merging into it (the paper configs share
# no task with it); `--config key=value` still overrides single keys of whichever config is used.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, str(SCHEMA_PATH))


include: "workflow/rules/common.smk"


wildcard_constraints:
    student="|".join(map(re.escape, STUDENTS)) if STUDENTS else "NO_STUDENT",
    model="|".join(map(re.escape, ["teacher", *STUDENTS])),
    task="|".join(map(re.escape, TASKS)),
    mode="full|adapter|lora",
    seed=r"-?\d+",


include: "workflow/rules/corpus.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        SUMMARY_FILES,
        REPORT_FILES,
    default_target: True
