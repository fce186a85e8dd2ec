"""Task2Vec's tasks and the ground truth it is judged against: a task (images + labels), the shipped Omniglot
probe, linear-head accuracy and experts fine-tuned on a task, and the task suites of the notebook and benchmark
(Omniglot alphabets, derived tasks with known relations, real handwritten digits).

Split from :mod:`workbench.methods.task2vec` (the estimator) and :mod:`workbench.methods.task2vec_distances` (what
is computed from embeddings); every name here is re-exported by :mod:`workbench.methods.task2vec`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import DataError, ParameterError
from workbench.methods.task2vec_distances import (
    Embedding, complexity, cross_distance_matrix, selection_summary,
)
from workbench.train import check_finite, progress, torch_threads

if TYPE_CHECKING:
    from workbench.methods.task2vec import Task2Vec

# ----------------------------------------------------------------------------------------------------------------
# Data: a task is images + labels
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A classification task: images (N, ...) and integer labels 0..C-1, plus a name."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str = ""

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"<Task {self.name!r}: {len(self)} images, {self.n_classes} classes>"


def as_task(dataset: Any, name: str | None = None) -> Task:
    """Accept ``(images, labels)``, an object with ``.images``/``.labels`` (e.g. an Omniglot
    ``ClassificationTask``), a ``TensorDataset``, or a :class:`Task`; labels are remapped to 0..C-1."""
    if isinstance(dataset, Task):
        return dataset if name is None else Task(dataset.images, dataset.labels, name)
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        images, labels = dataset
    elif hasattr(dataset, "images") and hasattr(dataset, "labels"):
        images, labels = dataset.images, dataset.labels
    elif isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) >= 2:
        images, labels = dataset.tensors[:2]
    else:
        raise DataError(f"cannot read a task from {type(dataset).__name__}: pass (images, labels), a TensorDataset "
                        "or an object with .images and .labels.")
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if images.ndim < 2 or len(images) != len(labels_np) or labels_np.ndim != 1:
        raise DataError(f"images {tuple(images.shape)} and labels {labels_np.shape} must be (N, ...) and (N,).")
    if not torch.is_floating_point(images):
        images = images.float()
    if not torch.isfinite(images).all():
        raise DataError("the task's images contain NaN or infinite values.")
    _, remapped = np.unique(labels_np, return_inverse=True)
    task = Task(images.float(), torch.as_tensor(remapped.reshape(-1), dtype=torch.long),
                name if name is not None else str(getattr(dataset, "name", "")))
    if task.n_classes < 2:
        raise DataError(f"task {task.name!r} has a single class: its Fisher is zero (a one-class softmax has no "
                        "gradient). Give at least two classes.")
    return task



# ----------------------------------------------------------------------------------------------------------------
# Probes: the shipped Omniglot probe, experts, and the accuracy a feature extractor reaches on a task
# ----------------------------------------------------------------------------------------------------------------


def load_probe(path: str | Path | None = None, *, verify: bool = True) -> nn.Module:
    """The shipped Omniglot probe (a narrow ResNet-18, see :mod:`workbench.models.omniglot_probe`)."""
    from workbench.models.omniglot_probe import load_probe as _load

    return _load(path, verify=verify)


def train_probe(profile: str = "full", seed: int = 0, output_dir: Path | None = None) -> Path:
    """``workbench train task2vec-probe``: (re)create the shipped probe checkpoint."""
    from workbench.models.omniglot_probe import train_probe as _train

    return _train(profile=profile, seed=seed, output_dir=output_dir)


def extract_features(model: nn.Module, images: Any, batch_size: int = 512) -> torch.Tensor:
    """The classifier inputs (penultimate features) of ``model`` for ``images``, in eval mode."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    prepare = getattr(model, "prepare", lambda z: z)
    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            h = prepare(x[i:i + batch_size])
            for layer in model.layers[:-1]:
                h = layer(h)
            parts.append(h)
    model.train(was_training)
    return torch.cat(parts)


def split_task(dataset: Any, test_fraction: float = 0.25, seed: int = 0) -> tuple[Task, Task]:
    """A stratified train/test split of a task (each class keeps ``test_fraction`` of its samples for testing)."""
    task = as_task(dataset)
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(task.n_classes):
        members = torch.nonzero(task.labels == c).view(-1)
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = int(round(len(members) * test_fraction))
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) > 1 else 0
        test_idx.append(members[:n_test])
        train_idx.append(members[n_test:])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    return (Task(task.images[tr], task.labels[tr], f"{task.name} (train)"),
            Task(task.images[te], task.labels[te], f"{task.name} (test)"))


def logistic_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                      test_labels: torch.Tensor, *, l2: float = 1e-3, max_iter: int = 100) -> float:
    """Test accuracy of a multinomial logistic regression (standardised features, L2, full-batch L-BFGS).

    Deterministic (zero initialisation); the "truth" against which Task2Vec's choices are judged."""
    mu, sd = train_features.mean(0), train_features.std(0) + 1e-6
    xtr, xte = (train_features - mu) / sd, (test_features - mu) / sd
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    w = torch.zeros(xtr.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, train_labels) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch_threads(1):  # many tiny steps
        opt.step(closure)
    with torch.no_grad():
        return float(((xte @ w + b).argmax(1) == test_labels).float().mean())


def task_accuracy(model: nn.Module, dataset: Any, *, test_fraction: float = 0.25, seed: int = 0) -> float:
    """How well ``model``'s features solve a task: a linear head fitted on a stratified train split, scored on the
    held-out rest. ``1 - task_accuracy`` is the task's difficulty for that feature extractor."""
    train, test = split_task(dataset, test_fraction, seed)
    return logistic_accuracy(extract_features(model, train.images), train.labels,
                             extract_features(model, test.images), test.labels)


def fine_tune(probe: nn.Module, dataset: Any, *, from_layer: int = 6, steps: int = 300, lr: float = 1e-3,
              batch_size: int = 64, reinit: bool = False, seed: int = 0) -> nn.Module:
    """An *expert*: a copy of ``probe`` whose ``layers[from_layer:]`` (layer3, layer4 and a new head on a ResNet)
    are trained on a task, the way the paper makes its experts from one pretrained network.

    ``reinit=True`` re-initialises those layers first, so that their features come from the source task alone
    (on a small probe, fine-tuning from the probe's own weights changes them too little for the source to matter).
    The frozen early layers run once (eval mode) and their outputs are cached, so this takes seconds."""
    task = as_task(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        expert = copy.deepcopy(probe).eval()
        layers = expert.layers
        head = nn.Linear(layers[-1].in_features, task.n_classes)
        expert.fc = head  # a ResNet's classifier attribute; `layers` is rebuilt from attributes
        if expert.layers[-1] is not head:
            raise ParameterError("fine_tune needs a probe whose `layers` list ends with its `fc` attribute.")
        with torch.no_grad():
            h = getattr(expert, "prepare", lambda z: z)(task.images)
            for layer in expert.layers[:from_layer]:
                h = layer(h)
        trained = nn.Sequential(*expert.layers[from_layer:])
        if reinit:
            for m in trained.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    m.reset_parameters()
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for p in expert.parameters():
            p.requires_grad_(False)
        for p in trained.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam([p for p in trained.parameters() if p.requires_grad], lr=lr)
        trained.train()
        for step in range(steps):
            idx = torch.randint(len(h), (batch_size,), generator=gen)
            loss = F.cross_entropy(trained(h[idx]), task.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        check_finite(loss, where="expert fine-tuning", hint="Lower lr.")
        for p in expert.parameters():
            p.requires_grad_(False)
        expert.name = f"expert: {task.name}"
    return expert.eval()


# ----------------------------------------------------------------------------------------------------------------
# Task suites for the notebook and benchmark: Omniglot alphabets, derived tasks, digits
# ----------------------------------------------------------------------------------------------------------------

#: A rough script-family annotation of the 50 Omniglot alphabets (from their Wikipedia descriptions), used only to
#: colour figures and to score how often a task's nearest neighbour is in the same family.
SCRIPT_FAMILY: dict[str, str] = {
    **dict.fromkeys(["Bengali", "Gujarati", "Gurmukhi", "Kannada", "Malayalam", "Oriya", "Sanskrit", "Grantha",
                     "Manipuri", "Sylheti", "Tibetan", "Burmese_(Myanmar)", "Balinese", "Tagalog"], "Brahmic"),
    **dict.fromkeys(["Blackfoot_(Canadian_Aboriginal_Syllabics)", "Inuktitut_(Canadian_Aboriginal_Syllabics)",
                     "Ojibwe_(Canadian_Aboriginal_Syllabics)"], "Canadian syllabics"),
    **dict.fromkeys(["Latin", "Greek", "Cyrillic", "Old_Church_Slavonic_(Cyrillic)", "Glagolitic", "Armenian",
                     "Anglo-Saxon_Futhorc"], "European"),
    **dict.fromkeys(["Asomtavruli_(Georgian)", "Mkhedruli_(Georgian)"], "Georgian"),
    **dict.fromkeys(["Hebrew", "Early_Aramaic", "Syriac_(Estrangelo)", "Syriac_(Serto)", "Malay_(Jawi_-_Arabic)",
                     "Mongolian", "Avesta", "Ge_ez"], "Aramaic-derived"),
    **dict.fromkeys(["Japanese_(hiragana)", "Japanese_(katakana)", "Korean"], "East Asian"),
    **dict.fromkeys(["Futurama", "Aurek-Besh", "Tengwar", "Atlantean", "Keble", "ULOG", "Angelic",
                     "Alphabet_of_the_Magi", "Atemayar_Qelisayer"], "invented"),
    **dict.fromkeys(["Braille", "Tifinagh", "N_Ko", "Arcadian"], "other"),
}


def short_name(alphabet: str) -> str:
    """``"Syriac_(Estrangelo)"`` -> ``"Syriac (Estrangelo)"``."""
    return alphabet.replace("_", " ")


def alphabet_tasks(omniglot: Any) -> dict[str, Task]:
    """Every Omniglot alphabet as a task ("which character is it?"), keyed by its readable name."""
    return {short_name(a): as_task(omniglot.alphabet_task(a), name=short_name(a)) for a in omniglot.alphabets}


def digits_images(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's real 8x8 handwritten digits as Omniglot-style images: ``size`` x ``size``, ink -1, paper +1."""
    from workbench.data import load_digits_7seg
    from workbench.data.omniglot import resize_images

    digits = load_digits_7seg()
    images = 1.0 - 2.0 * np.asarray(digits.images, dtype=np.float32) / 16.0
    return resize_images(images, size), np.asarray(digits.labels)


def derived_tasks(omniglot: Any, *, seed: int = 0) -> dict[str, Task]:
    """Tasks whose relations are known in advance, to make the geometry legible:

    * the same alphabet with half its characters, or with 5 of the 20 drawers (a subsample);
    * binary tasks (two characters; two related scripts told apart);
    * real handwritten digits (a different domain): all ten, 0-4, and odd vs even.
    """
    rng = np.random.default_rng(seed)
    chars = omniglot.characters
    out: dict[str, Task] = {}

    def alphabet_classes(name: str) -> np.ndarray:
        return np.flatnonzero(chars["alphabet"].to_numpy() == name)

    for alphabet in ("Latin", "Bengali"):
        classes = alphabet_classes(alphabet)
        half = np.sort(rng.choice(classes, size=len(classes) // 2, replace=False))
        name = f"{alphabet} (half the characters)"
        out[name] = as_task(omniglot.task(half), name=name)
        full = omniglot.task(classes)
        keep = np.isin(np.tile(np.arange(20), len(classes)), rng.choice(20, size=5, replace=False))
        out[f"{alphabet} (5 drawers)"] = as_task((full.images[keep], full.labels[keep]), name=f"{alphabet} (5 drawers)")
    two = alphabet_classes("Greek")[:2]
    out["Greek: 2 characters"] = as_task(omniglot.task(two), name="Greek: 2 characters")
    for a, b in (("Japanese_(hiragana)", "Japanese_(katakana)"), ("Latin", "Greek")):
        task_a, task_b = omniglot.alphabet_task(a), omniglot.alphabet_task(b)
        name = f"{short_name(a)} vs {short_name(b)}"
        images = np.concatenate([task_a.images, task_b.images])
        labels = np.r_[np.zeros(len(task_a.labels)), np.ones(len(task_b.labels))]
        out[name] = as_task((images, labels), name=name)
    images, labels = digits_images(omniglot.size)
    out["digits 0-9"] = as_task((images, labels), name="digits 0-9")
    low = labels < 5
    out["digits 0-4"] = as_task((images[low], labels[low]), name="digits 0-4")
    out["digits odd vs even"] = as_task((images, labels % 2), name="digits odd vs even")
    return out


def task_table(tasks: Mapping[str, Task], omniglot: Any | None = None):  # -> pandas.DataFrame
    """One row per task: name, kind (alphabet / derived / digits), Omniglot set, script family, size."""
    import pandas as pd

    sets = {}
    if omniglot is not None:
        sets = {short_name(a): s for a, s in zip(omniglot.characters["alphabet"], omniglot.characters["set"])}
    families = {short_name(a): f for a, f in SCRIPT_FAMILY.items()}
    rows = []
    for name, task in tasks.items():
        kind = "alphabet" if name in families else ("digits" if name.startswith("digits") else "derived")
        rows.append({"task": name, "kind": kind, "set": sets.get(name, "-"), "family": families.get(name, kind),
                     "classes": task.n_classes, "images": len(task)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# Expert (feature extractor) selection, measured
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ExpertStudy:
    """Candidate experts (each fine-tuned on a source task), target tasks, and what really happened.

    ``accuracy[i, j]``: accuracy a linear head on expert i's features reaches on target j (held-out split);
    ``generic_accuracy[j]``: the same with the un-tuned probe; ``d_sym[i, j]`` = d(source_i, target_j) and
    ``complexity[i]`` = d(source_i, t0), from which :meth:`scores` forms the paper's asymmetric distance.
    """

    experts: list[str]
    targets: list[str]
    accuracy: np.ndarray
    generic_accuracy: np.ndarray
    d_sym: np.ndarray
    complexity: np.ndarray
    source_embeddings: list[Embedding]
    target_embeddings: list[Embedding]

    def scores(self, alpha: float) -> np.ndarray:
        """``d_asym(source_i -> target_j) = d_sym - alpha * complexity_i`` (lower = choose)."""
        return self.d_sym - alpha * self.complexity[:, None]

    def summary(self, alphas: Sequence[float] = (0.0, 0.15)):  # -> pandas.DataFrame
        """One row per rule: Task2Vec with each alpha, the generic probe, a random expert and the oracle."""
        import pandas as pd

        rows = []
        for a in alphas:
            s = selection_summary(self.scores(a), self.accuracy)
            rows.append({"rule": f"Task2Vec d_asym, alpha={a:g}", "mean accuracy": s.selected_accuracy,
                         "top-1 (best expert chosen)": s.top1, "mean regret": s.mean_regret,
                         "Spearman(-d, accuracy)": s.mean_spearman})
        best = self.accuracy.max(0)
        rows.append({"rule": "generic probe (no fine-tuning)", "mean accuracy": float(self.generic_accuracy.mean()),
                     "top-1 (best expert chosen)": np.nan, "mean regret": float((best - self.generic_accuracy).mean()),
                     "Spearman(-d, accuracy)": np.nan})
        rows.append({"rule": "random expert (expected)", "mean accuracy": float(self.accuracy.mean()),
                     "top-1 (best expert chosen)": float(np.mean((self.accuracy >= best - 1e-12).sum(0)
                                                                 / len(self.experts))),
                     "mean regret": float((best - self.accuracy.mean(0)).mean()), "Spearman(-d, accuracy)": 0.0})
        rows.append({"rule": "oracle (best expert)", "mean accuracy": float(best.mean()),
                     "top-1 (best expert chosen)": 1.0, "mean regret": 0.0, "Spearman(-d, accuracy)": np.nan})
        return pd.DataFrame(rows)


def expert_study(probe: nn.Module, sources: Mapping[str, Any], targets: Mapping[str, Any], embedder: "Task2Vec", *,
                 fine_tune_steps: int = 300, from_layer: int = 6, reinit: bool = True, lr: float = 3e-3,
                 test_fraction: float = 0.5, seed: int = 0) -> ExpertStudy:
    """Fine-tune one expert per source task, embed sources and targets with ``embedder`` (same probe), and measure
    every expert on every target: the ground truth against which Task2Vec's choice is judged."""
    source_tasks = {k: as_task(v, name=k) for k, v in sources.items()}
    target_tasks = {k: as_task(v, name=k) for k, v in targets.items()}
    experts = {k: fine_tune(probe, t, from_layer=from_layer, steps=fine_tune_steps, reinit=reinit, lr=lr, seed=seed)
               for k, t in progress(list(source_tasks.items()), desc="fine-tuning experts", total=len(source_tasks))}
    src_e = embedder.embed_many(source_tasks, desc="embedding sources")
    tgt_e = embedder.embed_many(target_tasks, desc="embedding targets")
    # The experts share the probe's frozen layers[:from_layer]: run those once per target split.
    splits = {k: split_task(t, test_fraction, seed) for k, t in target_tasks.items()}
    frozen = {}
    for k, (tr, te) in splits.items():
        frozen[k] = tuple(_run_layers(probe, x, 0, from_layer) for x in (tr.images, te.images))
    accuracy = np.zeros((len(experts), len(target_tasks)))
    for i, expert in enumerate(progress(list(experts.values()), desc="scoring experts", total=len(experts))):
        for j, (k, (tr, te)) in enumerate(splits.items()):
            f_tr, f_te = (_run_layers(expert, h, from_layer, len(expert.layers) - 1, prepared=True) for h in frozen[k])
            accuracy[i, j] = logistic_accuracy(f_tr, tr.labels, f_te, te.labels)
    generic = np.array([task_accuracy(probe, t, test_fraction=test_fraction, seed=seed) for t in target_tasks.values()])
    d_sym = cross_distance_matrix(src_e, tgt_e)
    comp = np.array([complexity(e) for e in src_e])
    return ExpertStudy(list(experts), list(target_tasks), accuracy, generic, d_sym, comp, src_e, tgt_e)


def _run_layers(model: nn.Module, x: torch.Tensor, start: int, stop: int, *, prepared: bool = False,
                batch_size: int = 512) -> torch.Tensor:
    """``model.layers[start:stop]`` applied to ``x`` (images prepared by the model unless ``prepared``), eval mode."""
    model.eval()
    prepare = (lambda z: z) if prepared else getattr(model, "prepare", lambda z: z)
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            h = prepare(x[i:i + batch_size])
            for layer in model.layers[start:stop]:
                h = layer(h)
            parts.append(h)
    return torch.cat(parts)
