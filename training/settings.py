"""Defaults shared by the CLI and the Python API, kept free of heavy imports so that
``inspectd --help`` does not pay for importing torch."""

# The paper's 70k steps: no CPU gets there, so by default the time cap (DEFAULT_MAX_MINUTES) ends a
# run, and a faster CPU trains more steps instead of stopping early. With the pretrained teacher the
# steps pay: ELPV mono seed 1 scored AUROC 0.925 after 800 steps and 0.941 after 2,860 (one lone run,
# 0.44 s/step on a 2-core AVX-512/AMX CPU; README, Accuracy).
DEFAULT_MAX_STEPS = 70_000
DEFAULT_IMAGE_SIZE = 256
# Three times anomalib's and the paper's Adam rate (1e-4, tuned for 70k GPU steps): with the default
# student-teacher map and the few hundred steps a 2-core CPU fits in the cap, 3e-4 scored best on ELPV
# mono seeds 1 and 2 and on poly; with --anomaly-map both, 1e-4 did better (README, Accuracy).
DEFAULT_LEARNING_RATE = 3e-4
MODEL_SIZES = ("small", "medium")
# --student-width, the first is the default: auto picks half where the full student's step is too
# slow for HALF_WIDTH_BELOW_STEPS steps in --max-minutes (training.student), full is anomalib's PDN,
# half is PDN-S with its hidden convolutions half as wide (a third of the work per step and image)
STUDENT_WIDTHS = ("auto", "full", "half")
# On ELPV the full student's gain per step flattens from about 3,000 steps (mono AUROC 0.941 at
# 2,860, 0.948 at 6,093); below that a 2-core AVX2 CPU's half-width student, at 2.1-2.2x the steps,
# scored higher (README, Accuracy)
HALF_WIDTH_BELOW_STEPS = 3000
TEACHER_CHOICES_HELP = "auto | random | PATH"
ANOMALY_MAPS = ("student-teacher", "both")  # --anomaly-map, the first is the default
# --map-scale, the first is the default: the student-teacher map divided at each position by its
# mean on training images (training.position_scale), or anomalib's map as it is
MAP_SCALES = ("position", "none")
# --penalty-crop, the first is the default: the penalty-set image the student must not imitate the
# teacher on, cut from the photo resized to twice the input side at a random place, half the input
# side across (a quarter of the pixels, so its pass costs a fifth of anomalib's; same scale), or
# anomalib's centre crop at the full input side
PENALTY_CROPS = ("half", "full")
DEFAULT_CHECKPOINT_EVERY = 100  # 40 s to 10 min of training between checkpoints at 0.4-6 s/step
DEFAULT_OPSET = 18
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
# The CLI's wall-clock cap on the whole run, from the command's start to the written export: training
# stops early enough for the map scale, calibration and export, timed by this CPU's own eval passes
# (training.callbacks.TimeBudget), so a default run ends within 30 minutes on a slow CPU too (a
# 2-core AVX2 CPU needs about 5 minutes after training, an AVX-512/AMX one about 1). It used to be
# 26 minutes of training alone, which took a 2-core AVX2 CPU's run to 31 minutes.
DEFAULT_MAX_MINUTES = 29.0
# How many images the fit's own statistics take, whatever the data set's size. Each is a pass of the
# whole model or of the teacher per image, and on a 2-core AVX2 CPU (0.6 s per pass) taking every
# image cost minutes of a budget where steps are what is short (README, Accuracy):
# - the teacher's channel mean and standard deviation, which anomalib takes on every training image;
#   200 images give each of the 384 channels some 600,000 values;
# - the map's level per position (training.position_scale): 20 images scored as well as all of them
#   on the ELPV screens;
# - the map's 0.9 and 0.995 quantiles, which anomalib takes on every good held-out image: with the
#   student-teacher map alone they only scale the map (the threshold is calibrated afterwards, so no
#   verdict changes), and 32 images hold two million map values. anomalib's validation step, which
#   only sets the exported score scale, reads the same held-out batches (training.validation_sample).
TEACHER_STATS_IMAGES = 200
MAP_SCALE_IMAGES = 64
MAP_QUANTILE_IMAGES = 32
# Held-out AUROC every N steps when abnormal images exist; stop after PATIENCE evaluations
# without improvement. One evaluation scores the held-out set twice (~0.3 s/image on 2 cores).
DEFAULT_EARLY_STOP_EVERY = 100
DEFAULT_PATIENCE = 3
# inspectd quantize --activation-range-scale: NNCF sets each activation quantiser's range from the
# mean of every calibration image's extremes, which clips what goes beyond them. On the ELPV mono
# export (AVX2 CPU, fp32 AUROC 0.923) INT8 scored 0.882 with NNCF's ranges, 0.917 / 0.916 / 0.914
# with them 1.25 / 1.5 / 2 times as wide and 0.908 at 3 times (coarser steps): the middle of that
# plateau (training.quantize, benchmarks/RESULTS.md, Speed).
ACTIVATION_RANGE_SCALE = 1.5
