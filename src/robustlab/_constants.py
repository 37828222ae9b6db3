"""Constants shared across robustlab — one place, never bare literals in the middle of code."""

from __future__ import annotations

#: Default seed for CLI entry points and built-in jobs. Library functions take an explicit
#: ``generator`` / ``rng`` and never fall back to a global RNG.
DEFAULT_SEED = 0

#: Tolerance when checking that image inputs lie in [0, 1] (float32 rounding of x / 255).
IMAGE_RANGE_ATOL = 1e-6

#: Tolerance when checking that ``pred_probs`` rows sum to one.
PROB_SUM_ATOL = 1e-4

#: Default batch size for evaluation loops (inference only; memory-bounded, not a hyperparameter).
EVAL_BATCH_SIZE = 512

#: Default batch size for training when the caller gives none.
TRAIN_BATCH_SIZE = 128

#: Image sizes of the standard datasets.
CIFAR_SHAPE = (3, 32, 32)
MNIST_SHAPE = (1, 28, 28)
DIGITS_SHAPE = (1, 8, 8)

#: Mean/std of the standard datasets, used by the normalisation layer inside models.
#: CIFAR-10 values as used by RobustBench / pytorch-cifar; MNIST from the torchvision docs.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

#: SQLite busy timeout (seconds) for the results store.
STORE_TIMEOUT_S = 30.0

#: Name of the results database inside a run folder.
STORE_FILENAME = "results.sqlite"

#: Name of the HTML report inside a run folder.
REPORT_FILENAME = "report.html"

#: Environment variable that overrides the cache folder (cached default models, ...).
CACHE_ENV = "ROBUSTLAB_CACHE"

#: Default cache folder (relative to the user's home) when ``CACHE_ENV`` is unset.
DEFAULT_CACHE_DIR = ".cache/robustlab"

#: Name of the training checkpoint inside a training run folder (written atomically each epoch).
TRAIN_CHECKPOINT_FILENAME = "checkpoint.pt"

# --- models (robustlab.models) -----------------------------------------------------------------

#: Smallest image height/width the convolutional architectures accept (the digits images are 8x8).
MIN_IMAGE_SIZE = 8

#: Files inside a saved robustlab model folder (``robustlab.models.save_model``).
MODEL_WEIGHTS_FILENAME = "model.safetensors"
MODEL_CONFIG_FILENAME = "config.json"

#: Key of the safetensors metadata entry that stores the model config next to the weights.
MODEL_CONFIG_METADATA_KEY = "robustlab_config"

#: ``format`` / ``format_version`` written into every model config; loaders refuse newer versions.
MODEL_FORMAT_NAME = "robustlab-model"
MODEL_FORMAT_VERSION = 1

#: Keys under which foreign checkpoints nest their state dict, tried in this order.
CHECKPOINT_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")

#: Key prefixes added by wrappers (DataParallel/DistributedDataParallel, torch.compile), stripped
#: when every key of a loaded state dict carries them.
CHECKPOINT_KEY_PREFIXES = ("module.", "_orig_mod.")

#: Version of the results store schema (SQLite ``PRAGMA user_version``); bump with a migration.
STORE_SCHEMA_VERSION = 1

#: Order of known probes in the scan report; other probes follow alphabetically.
SCAN_PROBE_ORDER = ("clean", "audit", "corruptions", "adversarial", "certified", "calibration",
                    "detection", "repair")

#: Longest error message stored for a failed scan job (one line, truncated).
SCAN_ERROR_MAX_CHARS = 500

#: Examples run once, untimed, before the clean probe times inference (lazy init, caches).
CLEAN_WARMUP_EXAMPLES = 8

#: Confusion-matrix figures show per-cell counts up to this many classes, tick labels up to the next.
CONFUSION_ANNOTATE_MAX_CLASSES = 12
CONFUSION_TICKS_MAX_CLASSES = 30

# --- data (robustlab.data) -----------------------------------------------------------------------

#: Held-out fraction that ``robustlab.data.load_dataset`` uses for sources without an official
#: test split (built-ins, CSV, single-set .npz and ImageFolder trees); split seed is DEFAULT_SEED.
DATA_TEST_FRACTION = 0.2

#: Label column of CSV files when the caller names none.
CSV_LABEL_COLUMN = "label"

#: File extensions (lower case) read as images in ImageFolder trees.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# --- label_noise: sample-selection and multi-network methods (robustlab.label_noise.selection,
# --- robustlab.label_noise.dividemix) ----------------------------------------------------------

#: ELR (Liu et al., 2020): CIFAR-10 settings of the authors' code (config_cifar10.json).
ELR_LAMBDA = 3.0
ELR_BETA = 0.7
#: ELR clamps the softmax to [ELR_CLAMP, 1 - ELR_CLAMP] before the target update and the regulariser.
ELR_CLAMP = 1e-4

#: Co-teaching (Han et al., 2018): forget rate tau (set to the noise-rate estimate) and T_k.
COTEACHING_FORGET_RATE = 0.2
COTEACHING_NUM_GRADUAL = 10

#: Adaptive-k (Dedeoglu et al., 2023): Adam-style moments of the mini-batch mean loss; the
#: reference notebook trains the first 30 of 80 epochs with plain SGD (fraction 3/8).
ADAPTIVE_K_BETA1 = 0.9
ADAPTIVE_K_BETA2 = 0.999
ADAPTIVE_K_EPS = 1e-8
ADAPTIVE_K_WARMUP_FRACTION = 30 / 80

#: DivideMix (Li et al., 2020): CIFAR-10 settings of the paper (Sec. 4.1) and the authors' code.
DIVIDEMIX_WARMUP_EPOCHS = 10
DIVIDEMIX_P_THRESHOLD = 0.5
DIVIDEMIX_TEMPERATURE = 0.5
DIVIDEMIX_ALPHA = 4.0
DIVIDEMIX_LAMBDA_U = 25.0
DIVIDEMIX_RAMPUP_EPOCHS = 16
DIVIDEMIX_NUM_AUGMENTATIONS = 2
DIVIDEMIX_GMM_MAX_ITER = 10
DIVIDEMIX_GMM_TOL = 1e-2
DIVIDEMIX_GMM_REG_COVAR = 5e-4
#: Augmentation where torchvision's random crop + flip do not apply: images are shifted by up
#: to DIVIDEMIX_SHIFT_FRACTION of their side (4/32 px on CIFAR = 1/8; 1 px on 8x8 digits) with
#: zero padding; tabular inputs get Gaussian noise of this std (features scaled to [0, 1]).
DIVIDEMIX_SHIFT_FRACTION = 0.125
DIVIDEMIX_TABULAR_NOISE_STD = 0.05

# --- label noise simulation (robustlab.label_noise.simulate / annotators / cifarn / imbalance) ----

#: Standard deviation of the truncated normal that draws per-instance flip rates in the
#: instance-dependent noise of Xia et al. (2020) (``norm_std`` in their released code).
IDN_FLIP_STD = 0.1

#: CIFAR-10 asymmetric noise of Patrini et al. (2017), Sec. 5: truck -> automobile,
#: bird -> airplane, deer -> horse, cat <-> dog (class indices of the CIFAR-10 release).
CIFAR10_ASYMMETRIC_MAP = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

#: Dawid-Skene EM defaults: iteration cap, convergence tolerance on the mean log-likelihood,
#: and the Dirichlet pseudo-count added to every confusion/prior cell (keeps logs finite).
DAWID_SKENE_MAX_ITER = 100
DAWID_SKENE_TOL = 1e-7
DAWID_SKENE_SMOOTHING = 0.01

#: Marker for a missing annotation in an (N, R) annotation matrix.
MISSING_ANNOTATION = -1

#: Released CIFAR-N label files (Wei et al., ICLR 2022, github.com/UCSC-REAL/cifar-10-100n)
#: and the keys each must / may hold.
CIFAR10N_FILENAME = "CIFAR-10_human.pt"
CIFAR100N_FILENAME = "CIFAR-100_human.pt"
CIFAR10N_KEYS = ("clean_label", "aggre_label", "worse_label", "random_label1", "random_label2",
                 "random_label3")
CIFAR100N_KEYS = ("clean_label", "noisy_label")
CIFAR100N_OPTIONAL_KEYS = ("clean_coarse_label", "noisy_coarse_label")
CIFAR100_COARSE_CLASSES = 20

#: File written into a training run folder by ``robustlab train --label-noise``: noisy labels,
#: clean labels and the noise mask of the training split, so label audits can be scored later.
NOISE_FILENAME = "noise.npz"

# --- corruptions: MNIST-C, frequency, tabular, metrics, CIFAR-C layout (robustlab.corruptions) ---

#: AlexNet top-1 error on ImageNet-C per corruption, averaged over severities 1-5: the
#: normaliser of the mCE (Hendrycks & Dietterich, ICLR 2019, Sec. 4, Table/Fig. 3 and the
#: ImageNet-C evaluation code of github.com/hendrycks/robustness, reused verbatim by AugMix's
#: imagenet.py). Only the 15 benchmark corruptions have published AlexNet errors.
ALEXNET_IMAGENET_C_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}

#: AlexNet clean top-1 error on ImageNet used for the relative mCE (Hendrycks & Dietterich 2019,
#: Table 1 lists 43.5%; 0.4345 is the unrounded value used by evaluation code built on it).
ALEXNET_IMAGENET_CLEAN_ERROR = 0.4345

#: Severities of the ImageNet-C / CIFAR-10-C benchmarks.
CORRUPTION_SEVERITIES = (1, 2, 3, 4, 5)

#: Side of the images the MNIST-C parameters are defined for (Mu & Gilmer 2019).
MNIST_C_SIZE = 28

#: Name of the labels file of the CIFAR-10-C layout.
CIFAR_C_LABELS_FILENAME = "labels.npy"

#: Images corrupted per batch when writing the CIFAR-10-C layout (bounded memory).
CIFAR_C_WRITE_BATCH = 256

#: Tabular corruption strengths for severities 1-5 (robustlab's choice; no published table):
#: Gaussian noise std as a multiple of each feature's std, MCAR missing rate, fraction of
#: feature columns permuted across rows, categorical flip rate.
TABULAR_NOISE_SCALES = (0.1, 0.25, 0.5, 0.75, 1.0)
TABULAR_MISSING_RATES = (0.05, 0.1, 0.2, 0.3, 0.5)
TABULAR_SHUFFLE_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7)
TABULAR_FLIP_RATES = (0.05, 0.1, 0.2, 0.3, 0.5)

#: AugMix defaults (Hendrycks et al., ICLR 2020, Sec. 4 and the official CIFAR code):
#: mixture width, depth range (random in 1-3 when depth is -1), operation severity (of 10),
#: Dirichlet/Beta concentration and the Jensen-Shannon consistency weight.
AUGMIX_WIDTH = 3
AUGMIX_MAX_DEPTH = 3
AUGMIX_SEVERITY = 3
AUGMIX_ALPHA = 1.0
AUGMIX_JSD_WEIGHT = 12.0

# --- label noise: robust losses, loss correction, SAM (robustlab.label_noise.losses / training) --

#: Value that the reverse cross entropy substitutes for log(0) in the one-hot label: A = -4
#: (Wang et al., 2019, Sec. 3.3; also Ma et al., 2020). The authors' code clamps the one-hot at
#: 1e-4 instead, i.e. A = ln(1e-4) ~ -9.21; pass ``log_zero=math.log(1e-4)`` to match it.
RCE_LOG_ZERO = -4.0

#: Percentile of the anchor-point estimator of the transition matrix (Patrini et al., 2017, code:
#: ``np.percentile(eta[:, i], 97, interpolation="higher")``).
ANCHOR_QUANTILE = 0.97

#: Tolerance for a transition matrix's rows summing to one.
TRANSITION_ROW_ATOL = 1e-4

#: ASAM's eta in T_w = |w| + eta (Kwon et al., 2021, Sec. 5; their code's default 0.01).
ASAM_ETA = 0.01

#: Added to the gradient norm in SAM's ascent step, e = rho * g / (||g|| + SAM_NORM_EPS).
SAM_NORM_EPS = 1e-12

#: Added to the logit norm before dividing in LogitClip (as in the authors' code).
LOGITCLIP_NORM_EPS = 1e-7

#: Backward correction clips probabilities to [c, 1 - c] before the log, as the authors' code does
#: (giorgiop/loss-correction loss.py: Keras K.clip(y_pred, K.epsilon(), 1 - K.epsilon()), 1e-7);
#: it bounds the otherwise unbounded-below loss.
BACKWARD_PROB_CLIP = 1e-7

# --- label_noise: confident learning (confident.py, filter.py, rank.py) -------------------------
# Values are cleanlab 2.x's (cleanlab/internal/constants.py, count.py), so results match it exactly.

#: Fuzzy-comparison margin: thresholds are lowered by it, and the given label's probability is
#: raised by it before the "prediction equals given label" check (cleanlab FLOATING_POINT_COMPARISON).
CL_FLOAT_COMPARISON = 1e-6

#: Lower bound of per-class confident thresholds (cleanlab CONFIDENT_THRESHOLDS_LOWER_BOUND).
CL_THRESHOLD_LOWER_BOUND = 2e-6

#: Threshold of a class no example is labelled with: above any probability, so no row counts
#: into that column by passing it (cleanlab get_confident_thresholds' BIG_VALUE; an int on purpose,
#: it takes part in the same dtype promotion as cleanlab's).
CL_ABSENT_CLASS_THRESHOLD = 2

#: Denominators are clipped below at this value (cleanlab TINY_VALUE).
CL_TINY_VALUE = 1e-100

#: Lower clip of probabilities in the class prior and in the confidence-weighted entropy score
#: (cleanlab CLIPPING_LOWER_BOUND).
CL_CLIPPING_LOWER_BOUND = 1e-6

#: Off-diagonal noise rates are clipped to [0, this] before columns are renormalised.
CL_MAX_NOISE_RATE = 0.9999

#: Lower clip of the class prior after converging the latent estimates.
CL_CONVERGED_PRIOR_LOWER_BOUND = 1e-5

#: Iterations of the latent-estimate convergence (inner: inverse noise matrix and prior; outer:
#: noise matrix), cleanlab count._converge_estimates.
CL_CONVERGE_INNER_ITERATIONS = 5
CL_CONVERGE_OUTER_ITERATIONS = 3

#: Elements of ``pred_probs`` processed per chunk in the row passes (about 2 MB of float64, so the
#: boolean and index temporaries stay in cache).
CL_CHUNK_ELEMENTS = 1 << 18

#: Rows per tile when the per-class margins are written transposed (prune_by_noise_rate).
CL_TRANSPOSE_TILE_ROWS = 256

# --- label audit (robustlab.label_noise: oof, detectors, health, probe; `robustlab audit`) -------

#: Folds of the K-fold cross-validation that produces out-of-sample ``pred_probs``.
AUDIT_DEFAULT_FOLDS = 5

#: Percentile of the threshold samples' AUM used as the cut-off (Pleiss et al., 2020, Sec. 3).
AUM_THRESHOLD_PERCENTILE = 99.0

#: Training runs of the AUM threshold-sample procedure, each with a disjoint set of threshold
#: samples, so that every example is scored in at least one run (Pleiss et al., 2020, Sec. 3).
AUM_THRESHOLD_RUNS = 2

#: Neighbours of the kNN label-consistency detector (SimiFeat, Zhu et al., 2022 use k = 10).
KNN_NEIGHBOURS = 10

#: Similarities held at once in kNN searches (rows per chunk = this // N): 2**24 floats = 64 MiB.
KNN_CHUNK_ELEMENTS = 2**24

#: Significance of the one-sided binomial test that flags an example as ReCoV-noisy.
RECOV_ALPHA = 0.01

#: Repetitions of K-fold cross-validation in ReCoV (Chen et al., 2023).
RECOV_REPEATS = 50

#: Weight of the exponential moving average that aggregates per-class label quality in multi-label
#: data (cleanlab.multilabel_classification's default ``alpha``).
MULTILABEL_EMA_ALPHA = 0.8

#: Cosine similarity above which two different inputs count as near duplicates.
NEAR_DUPLICATE_COSINE = 0.995

#: Tukey's far-out fence: outlier when the kNN distance exceeds Q3 + factor * IQR.
OUTLIER_IQR_FACTOR = 3.0

#: Neighbours whose mean distance is the outlier score.
OUTLIER_NEIGHBOURS = 5

#: Suspects listed in the audit report table, and how many of them get an image thumbnail.
AUDIT_TOP_SUSPECTS = 20
AUDIT_THUMBNAILS = 16

#: Near-duplicate / exact-duplicate groups listed in the audit report.
AUDIT_TOP_DUPLICATES = 10

#: File names written by `robustlab audit` into its output folder.
AUDIT_SUSPECTS_FILENAME = "suspects.csv"

#: `robustlab audit` defaults: folds and (short) epochs per fold.
AUDIT_CLI_FOLDS = 5
AUDIT_CLI_EPOCHS = 10

# --- corruptions: ImageNet-C family image corruptions (robustlab.corruptions.image) ------------

#: Smallest ratio min(H, W) / preset size for which a corruption preset's parameter table is
#: scaled to the image; below it the preset does not fit (e.g. the 224 px table on 32 px images).
CORRUPTION_MIN_PRESET_SCALE = 0.25

# --- adversarial attacks and evaluation (robustlab.adversarial) ----------------------------------
#: A model output whose rows are non-negative and sum to 1 within this tolerance is taken to be
#: probabilities (a gradient-masking risk that attacks warn about).
ATTACK_PROBABILITY_ATOL = 1e-4

#: Tolerance when checking that adversarial inputs respect the eps ball (float32 rounding of
#: ``x + delta`` followed by clamping).
ATTACK_BALL_ATOL = 1e-6

# --- scan: comparison report (robustlab.scan.compare; `robustlab report RUN_A RUN_B ...`) -------
#: File name of the comparison page when ``--out`` is a folder.
COMPARE_REPORT_FILENAME = "compare.html"
#: Metric-name tokens (split on "_") saying higher is better / lower is better. A metric with
#: neither (e.g. an estimated noise rate of the shared data) is shown but never ranked.
COMPARE_HIGHER_IS_BETTER = ("accuracy", "auac", "auroc", "auprc", "auc", "radius", "agreement", "f1")
COMPARE_LOWER_IS_BETTER = ("error", "ece", "mce", "brier", "nll", "loss", "fpr")
#: A model more than this many points (percentage points for fractions) behind the best on a
#: headline number is called "clearly behind" in the verdict.
COMPARE_CLOSE_PP = 1.0
#: At most this many overlaid curves in one comparison (the first ones in report order).
COMPARE_MAX_CURVES = 8

# --- adversarial: evaluation, curves, masking checks (robustlab.adversarial.evaluate/curves/masking)
#: Examples per attack call in ``evaluate`` (fra31/auto-attack autoattack.py,
#: ``run_standard_evaluation(bs=250)``).
ADV_EVAL_BATCH_SIZE = 250
#: ... and on CPU, where a forward + input-gradient pass of the digits CNN costs about 11-12 us per
#: example at 122-128 rows against 13-18 at 244-256 (one thread) and 7 against 12 (two threads),
#: and where chunks this size give evaluate's worker processes something to share (the standard
#: suite on 1,400 digits: 20-21 s with 128-row chunks in 2 workers, 25-36 s with 250-row
#: batches in one process with 2 threads; benchmarks/adversarial_suite_speed.py).
ADV_EVAL_CPU_BATCH_SIZE = 128
#: On CPU an attack's examples are split into an even number of equal chunks once there are at
#: least twice this many (so 2 or 4 worker processes share them evenly; 3 chunks of 105 digits
#: on 2 workers took as long as one process with 2 threads).
ADV_EVAL_CPU_MIN_CHUNK = 32

#: AutoAttack's settings (fra31/auto-attack autoattack.py ``AutoAttack.__init__``/``set_version``):
#: iterations of APGD and FAB, APGD's step-size checkpoint parameter, target classes of APGD-T and
#: FAB-T (5 for APGD-T with L1), restarts of "plus" (and of APGD-CE with L1), Square's queries and
#: initial square fraction, EoT passes of "rand".
AUTOATTACK_NUM_STEPS = 100
AUTOATTACK_RHO = 0.75
AUTOATTACK_TARGET_CLASSES = 9
AUTOATTACK_L1_TARGET_CLASSES = 5
AUTOATTACK_PLUS_RESTARTS = 5
AUTOATTACK_L1_RESTARTS = 5
AUTOATTACK_SQUARE_QUERIES = 5000
AUTOATTACK_SQUARE_P_INIT = 0.8
AUTOATTACK_RAND_EOT_ITER = 20

#: Square lowering robust accuracy after the white-box attacks by more than this (a fraction of
#: all examples) triggers the gradient-masking warning (fra31 checks.py ``check_square_sr``,
#: ``alpha=.002``).
AUTOATTACK_SQUARE_SR_ALPHA = 0.002

#: Two forward passes whose L2-normalised output rows differ by more than this mean a randomised
#: model (fra31 checks.py ``check_randomized``, ``alpha=1e-4``; well above float32 noise).
ADV_EVAL_RANDOMIZED_ATOL = 1e-4

#: Relative slack on ``eps`` when ``evaluate`` checks that an attack's misclassified inputs lie in
#: the ball: float32 rounding of an L2/L1 norm summed over ~1e5 coordinates is about 1e-6 relative.
ADV_EVAL_BALL_RTOL = 1e-5

#: Quantiles of the minimal-norm distribution reported by ``minimal_norm_distribution``.
CURVE_NORM_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

#: Forward passes compared by the randomness check of ``check_gradient_masking`` (fra31
#: checks.py ``check_randomized`` uses n=5: a model with rare randomness, e.g. small dropout, may
#: agree on two passes).
MASKING_RANDOM_PASSES = 5

#: Fraction of correctly classified examples with a zero or non-finite input gradient above which
#: the zero-gradient check warns. fra31 (checks.py ``check_zero_gradients``) warns on a single
#: example: on a smooth model an exactly zero gradient needs saturated float32, which is itself
#: the masking symptom (Athalye et al. 2018, Sec. 3 "shattered gradients").
MASKING_ZERO_GRAD_FRACTION = 0.0

#: Robust accuracy may rise with eps by at most this fraction of the examples (and at least one
#: example) before the monotonicity check warns: independent runs at nearby radii differ by the
#: attack's randomness, a few examples; a larger rise means the attack fails where it should not
#: (Carlini et al. 2019, "On evaluating adversarial robustness", Sec. 5 checklist).
MASKING_MONOTONE_TOL = 0.02

#: Robust accuracy above which the unbounded check warns: at eps = the diameter of the unit box
#: every input can be reached, so a working attack breaks every example whose label is not the
#: model's prediction on some other input (Athalye et al. 2018, Sec. 3.1: "unbounded attacks do
#: not reach 100% success" is a masking symptom).
MASKING_UNBOUNDED_MAX_ACC = 0.01

#: Fraction of all examples that Square (black-box) breaks but APGD (white-box) does not above
#: which the black-box check warns: a gradient attack should dominate a query attack. fra31 warns
#: at 0.2 percentage points (checks.py ``check_square_sr``, ``alpha=.002``), but after its whole
#: white-box set (APGD-CE, APGD-T, FAB-T); this check compares with two APGD-CE runs only, which
#: on an undefended model can miss an example or two that Square finds, so it warns at 1% and
#: never for fewer than MASKING_BLACKBOX_MIN_EXAMPLES examples.
MASKING_BLACKBOX_EXCESS = 0.01
MASKING_BLACKBOX_MIN_EXAMPLES = 2

#: Fraction of the attacked examples on which two APGD runs with different seeds disagree (one
#: breaks, the other does not) above which the restart check warns. On an undefended or
#: adversarially trained model a 100-step APGD run is nearly seed-independent (AutoAttack's
#: restarts change robust accuracy by tenths of a point, Croce & Hein 2020, Sec. 5); several
#: points mean a noisy or randomised loss surface.
MASKING_RESTART_DISAGREEMENT = 0.05

#: Square's query budget inside ``check_gradient_masking`` (AutoAttack's 5000).
MASKING_SQUARE_QUERIES = 5000

# --- adversarial: gradient attacks (robustlab.adversarial.gradient, robustlab.adversarial.apgd) --
#: PGD's default step size as a multiple of ``eps / num_steps`` (Madry et al. 2018, App. A:
#: 2.5 * eps / steps lets a 10-step attack reach the ball's boundary from any start).
PGD_STEP_FACTOR = 2.5

#: L1 PGD (SLIDE, Tramer & Boneh 2019, Sec. 4): the step moves the coordinates whose ``|grad|``
#: is at or above this percentile (cleverhans ``sparse_l1_descent(grad_sparsity=99)``, the
#: authors' reference implementation).
PGD_L1_PERCENTILE = 99.0

# --- adversarial: decision-based attacks (robustlab.adversarial.decision) ------------------------
#: HopSkipJump (Chen et al. 2020; Jianbo-Lab/HSJA hsja.py, ART hop_skip_jump.py): sign queries at
#: iteration t are min(HSJ_INIT_EVALS * sqrt(t), HSJ_MAX_EVALS); binary-search threshold
#: gamma / d^{3/2} (L2) or gamma / d^2 (Linf); HSJ_INIT_SIZE random starts per example.
HSJ_INIT_EVALS = 100
HSJ_MAX_EVALS = 10000
HSJ_GAMMA = 1.0
HSJ_INIT_SIZE = 100
#: Probe radius of the first gradient estimate, as a fraction of the [0, 1] range (hsja.py
#: select_delta: 0.1 * (clip_max - clip_min)).
HSJ_FIRST_DELTA = 0.1
#: Bracket width at which the blend search of a random start stops (hsja.py initialize: 0.001).
HSJ_INIT_BLEND_THRESHOLD = 1e-3
#: The geometric step-size search gives up after this many halvings (the reference loops until it
#: succeeds; 2^-30 of the distance is far below float32 resolution of inputs in [0, 1]).
HSJ_MAX_HALVINGS = 30
#: Rows per model call when a batch of queries is sent (bounds memory for B_t directions x N).
HSJ_QUERY_CHUNK = 8192

# --- adversarial: square (robustlab.adversarial.square) ----------------------------------------
#: Square Attack's p schedule (Andriushchenko et al. 2020, App. A.3; fra31 square.py p_selection):
#: p is halved after each of these iterations of a budget of SQUARE_P_SCHEDULE_QUERIES queries.
SQUARE_P_SCHEDULE_QUERIES = 10000
SQUARE_P_SCHEDULE_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)

#: L2 start: the image is tiled with windows of side min(H, W) // SQUARE_L2_INIT_TILES (paper
#: Sec. 3.2; fra31 square.py ``s = h // 5``); L2 update windows have at least this side.
SQUARE_L2_INIT_TILES = 5
SQUARE_L2_MIN_WINDOW = 3

# --- adversarial: optimisation attacks (robustlab.adversarial.optimization: C&W-L2, EAD) --------
#: Binary search over the trade-off constant c (Carlini & Wagner 2017, Sec. V-A;
#: carlini/nn_robust_attacks l2_attack.py: BINARY_SEARCH_STEPS = 9, INITIAL_CONST = 1e-3; the EAD
#: reference IBM/EAD-Attack en_attack.py and ART's ElasticNet use the same values).
OPT_BINARY_SEARCH_STEPS = 9
OPT_C_INIT = 1e-3
#: Initial upper bound of c and the value below which it counts as "found" (l2_attack.py: 1e10 and
#: ``upper_bound < 1e9``); while no success has been seen, c is multiplied by this factor.
OPT_C_UPPER = 1e10
OPT_C_UPPER_FOUND = 1e9
OPT_C_GROWTH = 10.0
#: The reference's learning rate (Adam for C&W, the initial ISTA step for EAD): 1e-2.
OPT_LEARNING_RATE = 1e-2
#: Optimisation steps per binary-search step. The references use 10000 with early abort
#: (l2_attack.py, en_attack.py MAX_ITERATIONS); 100 (ART ElasticNet's max_iter) keeps a batch at a
#: few seconds on a CPU. Raise it for a reported minimum-norm figure.
OPT_NUM_STEPS = 100
#: Early abort (l2_attack.py): every num_steps // 10 steps, stop this binary-search step when the
#: loss is above this fraction of its value at the previous check.
OPT_ABORT_FRACTION = 0.9999
#: Adam's moment decays and epsilon for the C&W optimiser (the defaults of tf.train.AdamOptimizer
#: that l2_attack.py uses, equal to torch.optim.Adam's).
CW_ADAM_BETAS = (0.9, 0.999)
CW_ADAM_EPS = 1e-8
#: C&W tanh change of variables: x = (tanh(w) + 1) / 2 with w0 = atanh((2 x - 1) * this), so inputs
#: at 0 or 1 map to a finite w (l2_attack.py multiplies by 1.999999 on its [-0.5, 0.5] box).
CW_TANH_SCALE = 0.999999
#: EAD's L1 weight beta (Chen et al. 2018, Sec. 4; en_attack.py BETA; ART ElasticNet beta).
EAD_BETA = 1e-3
#: EAD's ISTA step decays as lr * (1 - k / num_steps) ** power (en_attack.py polynomial_decay).
EAD_LR_DECAY_POWER = 0.5

# --- adversarial: universal perturbations (robustlab.adversarial.universal) ----------------------
#: Target fooling rate 1 - delta with delta = 0.2 (Moosavi-Dezfooli et al. 2017, Alg. 1;
#: LTS4/universal python/universal_pert.py: delta=0.2, "80% fooling rate").
UAP_TARGET_FOOLING_RATE = 0.8
#: Passes over the data (universal_pert.py max_iter_uni = inf; Shafahi et al. 2020 use a few
#: epochs). A bound keeps the cost predictable.
UAP_MAX_PASSES = 20
#: DeepFool inner solver of Alg. 1 (universal_pert.py: max_iter_df=10, overshoot=0.02); a DeepFool
#: run that does not fool the model within these steps does not update v.
UAP_DEEPFOOL_STEPS = 10
UAP_DEEPFOOL_OVERSHOOT = 0.02
#: Added to |f_l| in each DeepFool step (not in LTS4's code): Alg. 1 leaves many points on a
#: decision boundary, where |f_l| ~ 0 and a plain DeepFool step stalls. On the digits MLP of the
#: tests it raises the Linf eps=0.3 fooling rate after 5 passes from 0.36-0.84 to 0.75-0.91 (5 seeds).
UAP_DEEPFOOL_GUARD = 1e-4
#: SGD variant (Shafahi et al. 2020, Alg. 1): per-example cross-entropy clipped at beta so a
#: few already-fooled examples do not dominate the minibatch gradient (9, the default of public
#: re-implementations of the method); the minibatch size (small enough for several
#: steps per pass on a few hundred examples); the default sign step is this factor times
#: eps / (total steps), Madry et al.'s rule (as PGD_STEP_FACTOR), so the step budget crosses the ball.
UAP_SGD_LOSS_CLIP = 9.0
UAP_SGD_BATCH_SIZE = 32
UAP_SGD_STEP_FACTOR = 2.5

# --- adversarial: scan probe and `robustlab attack` (robustlab.adversarial.probe) ---------------
#: Default radii of the ``adversarial`` probe per norm, for inputs in [0, 1] at the scale of the
#: built-in 8x8 digits (grey levels 1/16 apart): the zoo's naturally trained small CNN keeps about
#: 90% of its accuracy at the smallest radius, about a quarter at the middle one (the headline)
#: and none at the largest. Linf only: each norm costs about 35 CPU-seconds on 100 digits (the
#: L2 grid (0.25, 0.5, 1.0) behaves alike; see the probe's docstring).
ADV_PROBE_EPS = (("linf", (0.05, 0.1, 0.2)),)

#: Suite at each norm's headline radius (reliable) and at the other radii of the curve (cheap).
ADV_PROBE_SUITE = "standard"
ADV_PROBE_CURVE_SUITE = "fast"

#: Examples the probe attacks (a seeded random subset): keeps the probe well within a minute on
#: 2 CPU cores (the standard suite's APGD-T, FAB-T and Square on the unbroken examples dominate).
ADV_PROBE_NUM_EXAMPLES = 100

#: Bins of the histogram of minimal perturbation norms in the report.
ADV_PROBE_HIST_BINS = 20

#: The probe's cheaper budgets for its side checks (the headline numbers keep AutoAttack's):
#: FAB iterations for the minimal-norm histogram (on digits the median minimal Linf norm after 20
#: iterations is within 2% of the one after 100, at a fifth of the cost) and Square's queries in
#: the gradient-masking black-box check (AutoAttack's 5000 cost as much as the rest of the checks).
ADV_PROBE_MIN_NORM_STEPS = 20
ADV_PROBE_MASKING_SQUARE_QUERIES = 1000

#: Minimum-norm attack behind the probe's histogram of minimal perturbations (FAB offers every
#: norm the probe does).
ADV_PROBE_MIN_NORM_ATTACK = "fab"

#: APGD (Croce & Hein, ICML 2020, Alg. 1 / Sec. 3.2; fra31/auto-attack autopgd_base.py
#: ``APGDAttack.__init__`` and ``attack_single_run``): momentum ``alpha``; checkpoints
#: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); initial step
#: 2 * eps (Linf, L2) or 1 * eps (L1).
APGD_MOMENTUM = 0.75
APGD_FIRST_CHECKPOINT = 0.22
APGD_CHECKPOINT_DECAY = 0.03
APGD_MIN_CHECKPOINT = 0.06
APGD_STEP_FACTOR = 2.0
APGD_L1_STEP_FACTOR = 1.0

#: APGD-L1 (Croce & Hein, "Mind the box", ICML 2021, Sec. 3; autopgd_base.py L1 branch): the
#: step moves the top 20% |grad| coordinates at first; every 4% of the iterations the sparsity
#: becomes ||x_best - x||_0 / 1.5; when it shrank by more than 5% the step is reset to its initial
#: value and the run restarts from x_best, otherwise the step is divided by 1.5 (down to 1/10).
APGD_L1_INIT_SPARSITY = 0.2
APGD_L1_CHECKPOINT = 0.04
APGD_L1_SPARSITY_DROP = 0.95
APGD_L1_SPARSITY_DIVISOR = 1.5
APGD_L1_STEP_DIVISOR = 1.5
APGD_L1_MIN_STEP_RATIO = 10.0

# --- adversarial: minimum-norm attacks (robustlab.adversarial.fab, .minimum_norm) ----------------
#: FAB defaults (Croce & Hein, ICML 2020, Sec. 3.2-3.3; fra31/auto-attack fab_base.py L37-51):
#: largest bias toward the original (Eq. 11), extrapolation past the hyperplane, backward step.
FAB_ALPHA_MAX = 0.1
FAB_ETA = 1.05
FAB_BETA = 0.9

#: FAB-T: how many of the highest-scoring non-true classes are tried as targets
#: (fab_base.py L51 ``n_target_classes=9``; AutoAttack's standard suite).
FAB_NUM_TARGET_CLASSES = 9

#: Radius of FAB's random restarts when no eps is given and no adversarial was found yet
#: (fab_base.py L20, ``DEFAULT_EPS_DICT_BY_NORM``).
FAB_RESTART_RADIUS = (("linf", 0.3), ("l2", 1.0), ("l1", 5.0))

#: A random restart starts at this fraction of its radius (fab_base.py L139, L150, L159: ``* .5``).
FAB_RESTART_SCALE = 0.5

#: Floor on the projection-step norms in FAB's bias alpha (fab_base.py L216).
FAB_NORM_FLOOR = 1e-8

#: Added to the dual norm of a gradient difference before dividing by it (fab_base.py L171-181).
FAB_DIST_EPS = 1e-12

#: Gradient coordinates with a smaller magnitude count as zero in FAB's box-constrained
#: projection (the reference uses 1e-8 for L2/L1, fab_projections.py L72, L114, L162, and exact
#: zero for Linf, L59; a smaller floor keeps small but real gradients of float64 models).
FAB_ZERO_WEIGHT = 1e-12

#: DeepFool's overshoot (Moosavi-Dezfooli et al., CVPR 2016, Sec. 4: eta = 0.02; LTS4/DeepFool
#: Python/deepfool.py ``overshoot=0.02``) and its iteration cap (``max_iter=50`` there).
DEEPFOOL_OVERSHOOT = 0.02
DEEPFOOL_NUM_STEPS = 50

#: FMN defaults (Pintor et al., NeurIPS 2021, Sec. 4 / Alg. 1; foolbox fast_minimum_norm.py
#: ``max_stepsize=1.0``, ``min_stepsize = max_stepsize / 100``, ``gamma=0.05`` annealed to 0.001).
FMN_ALPHA_INIT = 1.0
FMN_ALPHA_FINAL_RATIO = 0.01
FMN_GAMMA_INIT = 0.05
FMN_GAMMA_FINAL = 0.001

#: Floor on gradient norms in FMN's normalised step and boundary-distance estimate
#: (adversarial-library fast_minimum_norm.py ``clamp_(min=1e-12)``).
FMN_GRAD_FLOOR = 1e-12

#: Bisection steps of FMN's projection onto the intersection of the eps ball and the box
#: (halves the bracket each time: 64 steps exhaust float64 precision).
FMN_PROJECTION_BISECTION_STEPS = 64

# --- adversarial: adversarial training (robustlab.adversarial.training*) -------------------------
#: Inner-maximisation steps of PGD-AT / TRADES / MART (Rice et al. 2020 train_cifar.py and the
#: TRADES/MART reference code use 10 on CIFAR-10).
ADV_TRAIN_NUM_STEPS = 10

#: Default inner step size as a fraction of eps: 2/255 for eps 8/255 (Rice et al. 2020; AWP's
#: train_cifar10.py) and 0.007 for 0.031 (TRADES/MART reference code) are both ~eps/4.
ADV_TRAIN_STEP_FRACTION = 0.25

#: TRADES' beta (Zhang et al. 2019, Sec. 5; trades.py / train_trades_cifar10.py: beta=6.0).
TRADES_BETA = 6.0

#: Std of the Gaussian start of the TRADES/MART inner maximisation (trades.py, mart.py: 0.001).
TRADES_INIT_STD = 0.001

#: MART's lambda (YisenWang/MART mart.py: beta=6.0).
MART_LAMBDA = 6.0

#: Numerical guards of MART's boosted CE and KL (mart.py: 1.0001 - p, + 1e-12, 1.0000001 - p_y).
MART_BCE_OFFSET = 1.0001
MART_LOG_EPS = 1e-12
MART_WEIGHT_OFFSET = 1.0000001

#: AWP's relative weight-perturbation size (Wu et al. 2020, csdongxian/AWP: --awp-gamma 0.005).
AWP_GAMMA = 5e-3
#: Guard against 0/0 when scaling the weight perturbation to the layer's norm (utils_awp.py EPS).
AWP_NORM_EPS = 1e-20

#: GAIRAT (Zhang et al. 2021, GAIRAT.py): Tanh weight assignment with Lambda = -1.
GAIR_LAMBDA = -1.0

#: Fast AT (Wong et al. 2020, train_fgsm.py): FGSM step 1.25 * eps from a uniform random start.
FAST_AT_STEP_FACTOR = 1.25
#: Catastrophic-overfitting check (train_fgsm.py --early-stop): PGD with 5 steps of eps/4 on a
#: training batch after every epoch; an epoch-to-epoch drop of more than 0.2 in its robust
#: accuracy counts as catastrophic overfitting.
CO_CHECK_STEPS = 5
CO_CHECK_STEP_FRACTION = 0.25
CO_ACCURACY_DROP = 0.2

#: VAT (Miyato et al. 2018, Sec. 3.3; takerum/vat_tf vat.py): xi = 1e-6, one power iteration,
#: LDS weight alpha = 1. (eps has no default: it depends on the input scale.)
VAT_XI = 1e-6
VAT_POWER_ITERATIONS = 1
VAT_ALPHA = 1.0

#: Per-epoch PGD robust accuracy on the validation set (`robustlab train` history.json): at most
#: this many validation examples, PGD with this many steps.
VAL_ROBUST_MAX_EXAMPLES = 512
VAL_ROBUST_NUM_STEPS = 10

#: AutoAttack's APGD-L1 ``use_largereps`` schedule (autopgd_base.py:486-490): radii 3, 2, 1 x eps
#: for ceil(0.3 N), ceil(0.3 N) and the remaining iterations.
APGD_LARGEREPS_FRACTION = 0.3

# --- calibration: metrics and post-hoc scaling (robustlab.calibration) ----------------------------
#: Default number of bins for ECE / MCE / reliability diagrams (Guo et al. 2017, Sec. 2 and
#: Table 1, use M = 15 equal-width bins).
CALIBRATION_N_BINS = 15
#: Probabilities are clipped to at least this before taking the log in the NLL (the float64
#: machine epsilon, as scikit-learn's ``log_loss`` does), so a zero probability gives a large
#: finite loss instead of inf.
NLL_PROB_FLOOR = 2.220446049250313e-16
#: Temperature scaling searches T in this interval (as 1/T, where the NLL is convex).
TEMPERATURE_BOUNDS = (1e-2, 1e2)
#: L-BFGS (scipy.optimize.minimize, method "L-BFGS-B") settings for the post-hoc scalers.
SCALING_MAX_ITER = 1000
SCALING_GTOL = 1e-8
SCALING_FTOL = 1e-12

# --- certified: randomized smoothing (robustlab.certified.smoothing) ------------------------------
#: Cohen et al. (ICML 2019) defaults, locuslab/smoothing code/certify.py and predict.py argument
#: defaults: n0 = 100 selection samples, n = 100,000 estimation samples, alpha = 0.001,
#: 1,000 noisy copies per forward pass ("--batch").
SMOOTHING_N0 = 100
SMOOTHING_N = 100_000
SMOOTHING_ALPHA = 1e-3
SMOOTHING_BATCH_SIZE = 1000
#: Class index meaning "abstain" in smoothed predictions (locuslab core.py Smooth.ABSTAIN = -1).
SMOOTHING_ABSTAIN = -1

# --- detection: OOD / adversarial-input detectors (robustlab.detection) ----
#: Energy score temperature (Liu et al., NeurIPS 2020, Sec. 3: "we use T = 1 throughout").
ENERGY_TEMPERATURE = 1.0
#: kNN detector's k (Sun et al., ICML 2022, Sec. 4.1: k = 50 on CIFAR-10 with the full training set).
KNN_K = 50
#: Guard against 0/0 when L2-normalising features (kNN).
FEATURE_NORM_EPS = 1e-12
#: Mahalanobis input pre-processing magnitudes searched by Lee et al. (NeurIPS 2018, Sec. 3;
#: pokaxpoka/deep_Mahalanobis_detector OOD_Generate_Mahalanobis.py ``m_list``).
MAHALANOBIS_EPS_GRID = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)
#: Default pre-processing magnitude: a member of the grid above (also ODIN's CIFAR value). The paper
#: tunes it per task on validation data; no single value is prescribed.
MAHALANOBIS_EPS = 0.0014
#: Default name of the penultimate-features layer (the input of the model's last ``nn.Linear``).
PENULTIMATE = "penultimate"
#: True-positive rate (in-distribution as positives) at which the FPR metric is read.
DETECTION_TPR = 0.95

# --- certified: bounds ----
#: Threat models and methods of ``robustlab.certified.bounds``.
CERTIFIED_NORMS = ("linf", "l2")
CERTIFIED_METHODS = ("ibp", "crown", "crown-ibp")
#: CROWN's backward passes are chunked (over (example, neuron) rows for intermediate bounds,
#: over examples for the output) so that one chunk's coefficients hold at most about this many
#: elements (2**18 floats = 1 MiB): small chunks stay in cache and reuse freed memory, where
#: large ones spend most of their time faulting in fresh pages (measured 2-4x slower on CPU).
CERTIFIED_CROWN_CHUNK_ELEMENTS = 2**18

# --- detection: auto layers/eps and the scan probe (robustlab.detection.mahalanobis, .probe) ----
#: The value of Mahalanobis' ``layers`` / ``eps`` that asks ``fit`` to choose them.
MAHALANOBIS_AUTO = "auto"
#: At most this many block ends (activation outputs) in an automatic layer ensemble, plus the
#: penultimate layer (Lee et al. 2018 use 4 block outputs + the first conv on ResNet-34).
MAHALANOBIS_AUTO_MAX_LAYERS = 4
#: Inputs of the one forward pass that finds the automatic layers.
MAHALANOBIS_AUTO_PROBE_INPUTS = 8
#: eps="auto" fits the ensemble on one half of each validation set and scores the other half:
#: each half needs at least this many inputs.
MAHALANOBIS_MIN_HALF = 2
#: Detection probe defaults: detectors run, in report order.
DET_PROBE_DETECTORS = ("msp", "energy", "knn", "mahalanobis")
#: Examples of the evaluation data the probe uses at most (split into fit / evaluation halves).
DET_PROBE_NUM_EXAMPLES = 1000
#: kNN's k in the probe: the fit half of a small evaluation set is a tiny feature bank (digits:
#: 180 examples, 18 per class), so Sun et al.'s k = 50 (for 50,000 training images) would reach
#: into other classes; the probe uses k = 10 (never more than the bank's size).
DET_PROBE_KNN_K = 10
#: The corruption (at severity 5) that makes the "corrupted" OOD set of images.
DET_PROBE_CORRUPTION = "gaussian_noise"
DET_PROBE_CORRUPTION_SEVERITY = 5
#: Tabular "gaussian_shift" OOD set: per-feature mean + shift * std, std * scale (fit-half moments).
DET_PROBE_TABULAR_SHIFT = 2.0
DET_PROBE_TABULAR_SCALE = 2.0
#: APGD-CE steps for the adversarial inputs the detectors must flag (AutoAttack's 100).
DET_PROBE_ATTACK_STEPS = 100
#: Fewest in / out inputs a detection metric is reported on.
DET_PROBE_MIN_EXAMPLES = 2
#: Bins of the score histograms.
DET_PROBE_HIST_BINS = 30

# --- certified: bounds (speed) ----
#: CROWN back-propagates through a Conv2d as one matrix product (its dense matrix, or the matrix
#: between patch windows) when that matrix has at most this many entries, else with
#: conv_transpose2d (measured on CPU: the product wins for small layers and few channels, e.g.
#: 5x faster for a 16 -> 1 channel 8x8 layer, and ties at 512 x 1024 entries).
CERTIFIED_CONV_MATRIX_ELEMENTS = 2**18
#: Chunk size of CROWN's coefficients on a GPU (2**24 floats = 64 MiB): there the cost of a chunk
#: is kernel launches, not memory traffic, so chunks are large (the CPU value is
#: CERTIFIED_CROWN_CHUNK_ELEMENTS).
CERTIFIED_CROWN_CHUNK_ELEMENTS_ACCELERATOR = 2**24

# --- calibration: training objectives and the scan probe (robustlab.calibration.training, .probe) ----
#: MaxSup (Zhou et al. 2025): suppression weight ramped linearly from 0.1 to 0.2 over training,
#: the authors' schedule (ZhouYuxuanYX/Maximum-Suppression-Regularization LT/loss/MAXsupLoss.py,
#: Conv/ffcv/losses.py begin_lambda=0.1, end_lambda=0.2).
MAXSUP_ALPHA = 0.1
MAXSUP_ALPHA_END = 0.2
#: ACLS (Park et al., ICCV 2023) defaults of the authors' configuration
#: (cvlab-yonsei/ACLS configs/loss/acls.yaml: alpha 0.1, pos_lambda 1.0, neg_lambda 0.1, margin 10).
ACLS_ALPHA = 0.1
ACLS_POS_LAMBDA = 1.0
ACLS_NEG_LAMBDA = 0.1
ACLS_MARGIN = 10.0
#: Calibration probe: examples of the evaluation data used at most (digits' test split has 360).
CAL_PROBE_NUM_EXAMPLES = 1000
#: Corruptions of the "corrupted" job, one per ImageNet-C category (noise, blur, weather, digital),
#: at the middle severity of the corruptions probe's 1-5 scale, with that probe's preset rule.
CAL_PROBE_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "brightness", "contrast")
CAL_PROBE_SEVERITY = 3
#: APGD-CE iterations of the "adversarial" job (AutoAttack's 100), at the adversarial probe's
#: headline linf eps on its example subset (ADV_PROBE_EPS, ADV_PROBE_NUM_EXAMPLES).
CAL_PROBE_ATTACK_STEPS = 100

# --- certified: certified training (robustlab.certified.training) ----
#: Shapes of the eps ramp of IBP / CROWN-IBP training (robustlab.certified.training.eps_schedule).
CERT_TRAIN_SCHEDULES = ("linear", "smoothed")
#: Epochs of plain training (eps = 0) before the ramp: CROWN-IBP config/mnist_crown.json
#: "schedule_start": 1 (auto_LiRPA simple_training.py start=3 is 2; deepmind train.py 2000 steps).
CERT_TRAIN_WARMUP_EPOCHS = 1
#: Default ramp length as a fraction of the epochs after warm-up: CROWN-IBP mnist_crown.json ramps
#: over 60 of 100 epochs, auto_LiRPA simple_training.py "length=60" of 100 epochs.
CERT_TRAIN_RAMP_FRACTION = 0.6
#: "smoothed" ramp: polynomial part's share and power (deepmind interval_bound_propagation
#: src/utils.py smooth_schedule mid_point=.25, beta=4.; auto_LiRPA SmoothedScheduler mid 0.25, beta 4).
CERT_TRAIN_RAMP_MID = 0.25
CERT_TRAIN_RAMP_EXPONENT = 4.0
#: IBP's clean-CE weight kappa 1 -> 0.5 over the ramp (Gowal et al. 2018, Sec. 4; deepmind
#: examples/train.py --nominal_xent_init 1 --nominal_xent_final .5).
CERT_TRAIN_IBP_KAPPA_START = 1.0
CERT_TRAIN_IBP_KAPPA_END = 0.5
#: CROWN-IBP's reference configurations train on the bound's CE alone ("method": "robust" in
#: CROWN-IBP config/mnist_crown.json, cifar_crown.json; auto_LiRPA cifar_training.py): kappa 0.
CERT_TRAIN_CROWN_IBP_KAPPA_START = 0.0
CERT_TRAIN_CROWN_IBP_KAPPA_END = 0.0
#: CROWN-IBP's bound weight beta 1 -> 0 over the ramp (Zhang et al. 2020, Sec. 3; CROWN-IBP
#: defaults.json "final-beta": 0.0); below 1e-5 only IBP is computed (train.py "if beta < 1e-5").
CERT_TRAIN_BETA_START = 1.0
CERT_TRAIN_BETA_END = 0.0
CERT_TRAIN_BETA_TINY = 1e-5
#: Training examples on which the per-epoch verified error is estimated (history metrics).
CERT_TRAIN_VERIFY_EXAMPLES = 256


# --- repair: signatures (robustlab.repair.signatures) ----
#: Share of a model's weighted layers a signature keeps when ``num_layers`` is not given
#: (rounded up, at least one). The reference keeps 7 of VGG-16's 13 convolutions
#: (VITA-Group/Robust_Weight_Signatures, model_patching.py ``--keep_num 7``).
RWS_DEFAULT_LAYER_FRACTION = 0.5
#: Quantisation widths a signature may be stored in (None = the weights' float dtype).
RWS_BITS = (8, 4)
#: File format tag and version written into a signature's safetensors metadata.
RWS_FORMAT = "robustlab-signature"
RWS_FORMAT_VERSION = 1
#: The undo record ``robustlab repair signature apply`` writes next to a patched model.
RWS_PATCH_LOG_FILENAME = "signature_patches.safetensors"
#: Scales of :func:`signature_scale_curve` when none are given: off, partial, full and beyond.
RWS_CURVE_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)

# --- repair: interpolate / adaptive (robustlab.repair.interpolate, .adaptive) ----
#: Integer buffers (BatchNorm's num_batches_tracked) cannot be mixed: interpolate_weights takes
#: them from model_a for alpha <= this value, from model_b above (the nearer endpoint).
INTERP_INTEGER_BUFFER_SWITCH = 0.5
#: Most coefficients one interpolation curve evaluates.
INTERP_MAX_ALPHAS = 1000
#: `robustlab repair interpolate` defaults: the grid, the threat model and the examples evaluated.
INTERP_CLI_ALPHAS = "0,0.25,0.5,0.75,1"
INTERP_CLI_EPS = "8/255"
INTERP_CLI_SUITE = "fast"
INTERP_CLI_NUM_EXAMPLES = 200
#: Adaptive smoothing (Bai et al., SIMODS 2024). The composite loss of the mixing network,
#: c_bce * BCE(gamma, s) + c_ce * CE(mixed, y) + c_prod * BCE * CE with s = 0 on clean and 1 on
#: adversarial inputs; constants of the reference configuration
#: (Bai-YT/AdaptiveSmoothing configs/cifar10_edm_apgd.yaml: bce 1.5, ce 0, prod 0.3).
ADAPTIVE_LOSS_BCE = 1.5
ADAPTIVE_LOSS_CE = 0.0
ADAPTIVE_LOSS_PROD = 0.3
#: Mixing network optimiser: AdamW, as the reference trainer (adaptive_smoothing/trainer.py),
#: with its weight decay 1e-5; the learning rate is larger than its 5e-5 because the network is
#: trained from scratch here on small data (the reference fine-tunes for 3 epochs of CIFAR); 1e-3
#: barely moved it on digits in 10 epochs, 1e-2 is what docs/benchmarks/repair_adaptive.md used.
ADAPTIVE_LR = 1e-2
ADAPTIVE_WEIGHT_DECAY = 1e-5
ADAPTIVE_EPOCHS = 10
ADAPTIVE_BATCH_SIZE = 64
#: Hidden width of the default mixing network (a two-layer perceptron on pooled features).
ADAPTIVE_HIDDEN_SIZE = 64
#: PGD steps of the adaptive attack (through the mixed model) that makes the adversarial half
#: of every training batch; the reference uses APGD with about 75 steps on CIFAR.
ADAPTIVE_ATTACK_STEPS = 10
#: Floor of the per-feature standard deviation used to standardise the mixing network's input.
ADAPTIVE_FEATURE_STD_FLOOR = 1e-6

# --- certified: scan probe and `robustlab certify` (robustlab.certified.probe) ----
#: Default radii of the ``certified`` probe's bound propagation per norm, for inputs in [0, 1] at
#: the scale of the built-in 8x8 digits: CROWN verifies about 95%, 90% and 50-70% of the zoo's
#: naturally trained small CNN at these radii, IBP and CROWN-IBP nothing (the gap between the
#: methods on a network not trained for it); at 0.05 CROWN verifies nothing either. The headline
#: is the middle radius.
CERT_PROBE_EPS = (("linf", (0.01, 0.02, 0.03)),)
#: Bound-propagation methods of the probe (robustlab.certified.bounds); the headline is CROWN's.
CERT_PROBE_METHODS = ("ibp", "crown-ibp", "crown")
#: Noise levels of the probe's randomized-smoothing jobs (Cohen et al. 2019 use 0.12, 0.25, 0.5,
#: 1.0 on [0, 1] pixels; one level keeps the default scan cheap).
CERT_PROBE_SIGMAS = (0.25,)
#: Monte Carlo budget of the probe's CERTIFY: n0 selection samples as Cohen et al. (locuslab
#: certify.py --N0 100), but n = 1,000 estimation samples instead of their 100,000 (a small-n
#: estimate: the largest certifiable radius is sigma * Phi^-1(alpha^(1/n)) = 2.46 sigma instead of
#: 3.8 sigma), alpha = 0.001 as theirs.
CERT_PROBE_N0 = 100
CERT_PROBE_N = 1000
CERT_PROBE_ALPHA = 1e-3
#: L2 radii at which the smoothing jobs report certified accuracy (Cohen et al. Table 1 style).
CERT_PROBE_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Examples of the probe (one seeded random subset for every job): CROWN on the zoo's small CNN
#: costs about 0.2 CPU-seconds per example and radius (whatever the radius), CERTIFY with
#: n0 + n = 1,100 noisy copies about 0.07 CPU-seconds per example, so 20 examples keep the probe
#: near 15 CPU-seconds (a small-sample estimate: one example is 5 points of accuracy).
CERT_PROBE_NUM_EXAMPLES = 20
#: Examples bounded per call of the bound-propagation functions (exact: each example's bounds do
#: not depend on the rest of its batch; only memory changes).
CERT_PROBE_BOUNDS_BATCH_SIZE = 128
#: `robustlab certify` defaults: the radius of bound propagation (the usual CIFAR-10 value), the
#: smoothing noise level and estimation samples (Cohen et al. use n = 100,000; fewer samples give
#: smaller certified radii, never unsound ones).
CERT_CLI_EPS = "8/255"
CERT_CLI_SIGMA = 0.25
CERT_CLI_N = 10_000
