"""Few-shot episodes: N-way, K-shot, Q-query (+ U unlabeled per class), seeded.

An :class:`Episode` is a small object of tensors ready for a model; an :class:`EpisodeSampler` draws them::

    om = load_omniglot()
    train = omniglot_split("ht")["train"]
    sampler = EpisodeSampler(om.images, om.labels, n_way=20, k_shot=1, q_query=3, rotate=True, classes=train)
    episode = sampler.sample()          # support_x (20, 1, 28, 28), support_y 0..19, query_x (60, 1, 28, 28) ...

How an episode is drawn:

1. ``n_way`` distinct classes (from ``classes`` if given), in random order; class ``j`` of the episode
   gets label ``j`` (``episode.classes[j]`` is its original id).
2. Per class, ``k_shot`` support, ``q_query`` query and ``n_unlabeled`` unlabeled samples. By default all
   three are disjoint (drawn without replacement). With ``overlap=True`` they are drawn independently of each
   other, so a query image may also be in the support set (the HyperTransformer code samples support and
   query independently).
3. With ``rotate=True`` each class gets a random rotation by k x 90 degrees (k in 0..3), applied to all its
   support, query and unlabeled images alike: a rotated class is a new class (HyperTransformer's Omniglot
   training augmentation).

Samples are ordered class by class (support_y = [0]*K + [1]*K + ...). Episode ``i`` of a sampler depends only
on ``(seed, i)``: :meth:`EpisodeSampler.episode` gives random access, :meth:`EpisodeSampler.sample` walks
i = 0, 1, 2, ... and iteration yields ``n_episodes`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import numpy as np
import torch

from workbench.errors import ParameterError


@dataclass
class Episode:
    """One few-shot task. Images are float32 (n, C, H, W); labels are int64 in 0..n_way-1.

    ``unlabeled_y`` holds the true labels of the unlabeled samples for analysis only; a model must not see them.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    unlabeled_x: torch.Tensor
    unlabeled_y: torch.Tensor
    classes: torch.Tensor  # (n_way,) original class ids
    rotations: torch.Tensor  # (n_way,) number of 90-degree turns applied to each class

    @property
    def n_way(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> "Episode":
        """The same episode with every tensor on ``device``."""
        return Episode(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __repr__(self) -> str:
        return (f"<Episode {self.n_way}-way: support {tuple(self.support_x.shape)}, query {tuple(self.query_x.shape)}, "
                f"unlabeled {tuple(self.unlabeled_x.shape)}>")


def _as_tensor_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if x.ndim != 4:
        raise ParameterError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}.")
    return x.float()


class EpisodeSampler:
    """Draws seeded N-way K-shot episodes from ``images`` (N, H, W) or (N, C, H, W) and ``labels`` (N,)."""

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor | Sequence[int],
                 n_way: int, k_shot: int, q_query: int, n_unlabeled: int = 0, rotate: bool = False,
                 overlap: bool = False, seed: int = 0, classes: Sequence[int] | np.ndarray | None = None,
                 n_episodes: int | None = None) -> None:
        self.images = _as_tensor_images(images)
        labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if labels.shape != (len(self.images),):
            raise ParameterError(f"labels must have shape ({len(self.images)},), got {labels.shape}.")
        for name, value, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1), ("q_query", q_query, 0),
                                 ("n_unlabeled", n_unlabeled, 0), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}.")
        if rotate and self.images.shape[-1] != self.images.shape[-2]:
            raise ParameterError("rotate=True needs square images.")
        self.n_way, self.k_shot, self.q_query, self.n_unlabeled = int(n_way), int(k_shot), int(q_query), int(n_unlabeled)
        self.rotate, self.overlap, self.seed, self.n_episodes = rotate, overlap, int(seed), n_episodes

        available = np.unique(labels) if classes is None else np.unique(np.asarray(classes))
        self.classes = available
        self._members = {int(c): np.flatnonzero(labels == c) for c in available}
        need = max(self.k_shot, self.q_query, self.n_unlabeled) if overlap else \
            self.k_shot + self.q_query + self.n_unlabeled
        short = [c for c, m in self._members.items() if len(m) < need]
        if short:
            raise ParameterError(
                f"{len(short)} classes have fewer than the {need} samples an episode needs "
                f"(e.g. class {short[0]} has {len(self._members[short[0]])}); lower k_shot/q_query/n_unlabeled"
                f"{'' if overlap else ', pass overlap=True'} or drop those classes via `classes=`.")
        if self.n_way > len(available):
            raise ParameterError(f"n_way={self.n_way} but only {len(available)} classes are available.")
        self._next = 0

    def episode(self, index: int) -> Episode:
        """Episode number ``index`` (the same for the same seed, whatever was drawn before)."""
        rng = np.random.default_rng([self.seed, index])
        chosen = rng.choice(self.classes, size=self.n_way, replace=False)
        rotations = rng.integers(0, 4, size=self.n_way) if self.rotate else np.zeros(self.n_way, dtype=np.int64)
        parts: dict[str, list[torch.Tensor]] = {"support": [], "query": [], "unlabeled": []}
        counts = {"support": self.k_shot, "query": self.q_query, "unlabeled": self.n_unlabeled}
        for c, k in zip(chosen, rotations):
            members = self._members[int(c)]
            if self.overlap:
                picks = {part: rng.choice(members, size=n, replace=False) for part, n in counts.items()}
            else:
                order = rng.permutation(members)
                picks = {"support": order[:self.k_shot],
                         "query": order[self.k_shot:self.k_shot + self.q_query],
                         "unlabeled": order[self.k_shot + self.q_query:self.k_shot + self.q_query + self.n_unlabeled]}
            for part, idx in picks.items():
                x = self.images[torch.from_numpy(idx)]
                parts[part].append(torch.rot90(x, int(k), dims=(-2, -1)) if k else x)

        def stack(part: str) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.cat(parts[part]) if parts[part] else self.images[:0]
            y = torch.arange(self.n_way).repeat_interleave(counts[part])
            return x.contiguous(), y

        support_x, support_y = stack("support")
        query_x, query_y = stack("query")
        unlabeled_x, unlabeled_y = stack("unlabeled")
        return Episode(support_x, support_y, query_x, query_y, unlabeled_x, unlabeled_y,
                       classes=torch.from_numpy(chosen.astype(np.int64)),
                       rotations=torch.from_numpy(rotations.astype(np.int64)))

    def sample(self) -> Episode:
        """The next episode (0, 1, 2, ... since construction or :meth:`reset`)."""
        episode = self.episode(self._next)
        self._next += 1
        return episode

    def reset(self) -> None:
        """Start again from episode 0."""
        self._next = 0

    def __iter__(self) -> Iterator[Episode]:
        """Yield episodes from :meth:`sample`; ``n_episodes`` of them, or forever if it is None."""
        count = 0
        while self.n_episodes is None or count < self.n_episodes:
            yield self.sample()
            count += 1

    def __len__(self) -> int:
        if self.n_episodes is None:
            raise TypeError("this EpisodeSampler is endless (n_episodes=None); it has no length.")
        return self.n_episodes

    def __repr__(self) -> str:
        extra = (f", {self.n_unlabeled} unlabeled" if self.n_unlabeled else "") + (", rotate" if self.rotate else "") \
            + (", overlap" if self.overlap else "")
        return (f"<EpisodeSampler {self.n_way}-way {self.k_shot}-shot {self.q_query}-query{extra}, "
                f"{len(self.classes)} classes, seed {self.seed}>")
