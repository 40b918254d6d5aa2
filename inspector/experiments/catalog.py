"""The experiments: what each one trains, which columns it summarises and what it compares."""

from __future__ import annotations

from dataclasses import dataclass, field

from .constraints import CONFIGS, METHODS
from .data import DIGIT_PAIRS
from .nets import ACTIVATIONS, NETWORKS
from .train import INITS, Spec

TARGET = 0.9  # test accuracy that counts as "reached" for epochs_to_target
EPOCHS = {"mlp": 30, "cnn": 15, "lstm": 20}
QUICK_EPOCHS = {"mlp": 8, "cnn": 2, "lstm": 3}
SEEDS, QUICK_SEEDS = 5, 2
TASKS = (*DIGIT_PAIRS, "digits10", "breast_cancer")


@dataclass(frozen=True)
class Job:
    """One configuration, run once per seed. ``config`` is the label of the experiment's factor."""

    spec: Spec
    config: str
    task: str = "digits10"


@dataclass(frozen=True)
class Experiment:
    name: str
    question: str
    method: str
    jobs: tuple
    keys: list            # the columns that name a configuration
    metrics: list         # summarised per configuration
    tested: list          # compared against the baseline, paired by seed
    within: list = field(default_factory=list)
    factor: str = "config"
    baseline: str = "free"


def _signs_jobs() -> tuple:
    jobs = []
    for net in NETWORKS:
        jobs.append(Job(Spec(net), "free"))
        jobs += [Job(Spec(net, c, m), c) for c in CONFIGS[1:] for m in METHODS]
    jobs += [Job(Spec("mlp", c, "clamp", biases=True), c) for c in CONFIGS[1:]]
    return tuple(jobs)


SIGNS = Experiment(
    "signs", "How accurate is a network whose weights are not allowed to be negative (or positive)?",
    "Every weight matrix is constrained (normalisation parameters stay free; biases are free, or constrained "
    "the same way in the rows with biases = True): free, non-negative, non-positive, fixed initial signs "
    "(magnitudes learned), and Dale's principle (each unit's outgoing weights share one sign; 80 % of units "
    "excitatory). A constraint is imposed by projection after every Adam step (clamp: values on the wrong "
    "side become 0) or by reparametrisation (reparam: w = ±softplus(v)). violations counts the constrained "
    "values on the wrong side at the end, measured by winspect (negatives, positives, or sign flips since "
    "initialisation). dead_relu_frac: hidden ReLU units whose pre-activation is <= 0 on every test example.",
    _signs_jobs(), ["network", "config", "method", "biases"],
    ["test_acc", "train_acc", "weight_neg_frac", "weight_zero_frac", "violations", "dead_relu_frac"],
    ["test_acc"], within=["network"])

SPEED = Experiment(
    "speed", "Does training take longer without negative weights?",
    f"Training wall time per epoch (evaluation excluded), and the epochs and seconds until the test accuracy "
    f"first reaches {TARGET:.0%} (NaN when it never does: reached_target = 0), for free weights and for "
    "non-negative weights (clamp and reparam), MLP and LSTM.",
    tuple(Job(Spec(net, c, m), c) for net in ("mlp", "lstm")
          for c, m in (("free", "clamp"), ("nonneg", "clamp"), ("nonneg", "reparam"))),
    ["network", "config", "method"],
    ["sec_per_epoch", "epochs_to_target", "seconds_to_target", "reached_target", "test_acc"],
    ["sec_per_epoch", "epochs_to_target", "test_acc"], within=["network"])

TASKS_EXPERIMENT = Experiment(
    "tasks", "Does the answer depend on the task: easy or hard digit pairs, binary or 10-class, images or a table?",
    "The MLP on four digit pairs (0 vs 1 easy, 1 vs 7, 4 vs 9, 3 vs 8 harder), on all ten digits, and on "
    "scikit-learn's breast-cancer table (30 standardised features: unlike pixels, inputs of both signs), "
    "with free, non-negative and non-positive weights (clamp). config is the task; signs the constraint.",
    tuple(Job(Spec("mlp", c), t, task=t) for t in TASKS for c in ("free", "nonneg", "nonpos")),
    ["config", "signs"], ["test_acc", "train_acc", "weight_neg_frac", "dead_relu_frac"], ["test_acc"],
    within=["config"], factor="signs")

ACTIVATIONS_EXPERIMENT = Experiment(
    "activations", "What do sigmoid, tanh, ReLU and GELU networks do with negative weights and inputs?",
    "The MLP trained free with each hidden activation. preact_neg_frac: hidden pre-activations below 0 on the "
    "test set; dead_relu_frac (ReLU only): hidden units <= 0 on every test example. The table of function "
    "values is computed exactly (float64).",
    tuple(Job(Spec("mlp", activation=a), a) for a in ("relu", "sigmoid", "tanh", "gelu")),
    ["config"], ["test_acc", "weight_neg_frac", "preact_neg_frac", "dead_relu_frac"], ["test_acc"],
    baseline="relu")

INIT = Experiment(
    "init", "Does the initialisation matter, and what happens with all-zero weights?",
    "The MLP trained free from: zeros (weights and biases), a constant 0.05 (weights and biases), U(-1, 1), "
    "N(0, 1), Xavier/Glorot uniform, and Kaiming-uniform with a = √5, PyTorch's default (`kaiming`); biases 0 "
    "except for `constant` and `kaiming` (PyTorch's default bias). distinct_units: distinct hidden units "
    "(fc1 rows with their bias, compared exactly) at the end: 64 unless the units are identical copies.",
    tuple(Job(Spec("mlp", init=i), i) for i in INITS), ["config"],
    ["test_acc", "epochs_to_target", "reached_target", "init_neg_frac", "weight_neg_frac", "distinct_units"],
    ["test_acc"],
    baseline="kaiming")

EVOLUTION = Experiment(
    "evolution", "How do the signs of the weights change during training?",
    "One MLP run (free, first seed) saved after every epoch (epoch 0 = initialisation) and read back with "
    "winspect's track: per-layer negative fraction and sign flips from one epoch to the next.",
    (Job(Spec("mlp"), "free"),), ["config"], ["test_acc", "weight_neg_frac"], [])

EXPERIMENTS = {e.name: e for e in (SIGNS, SPEED, TASKS_EXPERIMENT, ACTIVATIONS_EXPERIMENT, INIT, EVOLUTION)}
ACTIVATION_NAMES = tuple(ACTIVATIONS)
