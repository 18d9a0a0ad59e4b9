"""A numpy ring buffer of transitions, with bootstrap, holdout and sequence sampling.

Shapes use ``n`` for transitions, ``d`` = obs_dim and ``a`` = act_dim. Every index this module
hands out or accepts is a *chronological* index: ``0`` is the oldest stored transition and
``len(buffer) - 1`` the newest, whatever the ring position. ``buffer.take(indices)`` turns any
array of such indices into a batch.

An episode ends at a transition whose ``terminated`` or ``truncated`` flag is set, and also where
the stored stream is discontinuous (``next_obs[t] != obs[t + 1]``: a reset that no flag marked,
for example after a run was killed and resumed mid-episode). Rows added in one ``add`` call are
taken to be consecutive steps of one environment.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Tuple, Union

import numpy as np
import numpy.typing as npt

PathLike = Union[str, "os.PathLike[str]"]

FIELDS = ("obs", "act", "next_obs", "reward", "terminated", "truncated")
_FORMAT_NAME = "mbrl_bayes.ReplayBuffer"
_FORMAT_VERSION = 1


class ReplayBuffer:
    """A fixed-capacity ring buffer of ``(obs, act, next_obs, reward, terminated, truncated)``.

    When full, each new transition overwrites the oldest. Storage is preallocated numpy arrays:
    ``obs``/``next_obs`` [capacity, d], ``act`` [capacity, a], ``reward`` [capacity] and boolean
    ``terminated``/``truncated`` [capacity].

    Args:
        capacity: maximum number of transitions kept (> 0).
        obs_dim: observation size ``d`` (> 0).
        act_dim: action size ``a`` (> 0).
        obs_dtype: dtype of ``obs`` and ``next_obs``.
        act_dtype: dtype of ``act`` (an integer dtype for discrete actions, with ``act_dim=1``).
        reward_dtype: dtype of ``reward``.
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        obs_dtype: npt.DTypeLike = np.float32,
        act_dtype: npt.DTypeLike = np.float32,
        reward_dtype: npt.DTypeLike = np.float32,
    ):
        for name, value in (("capacity", capacity), ("obs_dim", obs_dim), ("act_dim", act_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"ReplayBuffer: {name} must be a positive integer, got {value!r}.")
        self._capacity = int(capacity)
        self._obs_dim = int(obs_dim)
        self._act_dim = int(act_dim)
        self._storage = {
            "obs": np.zeros((self._capacity, self._obs_dim), dtype=obs_dtype),
            "act": np.zeros((self._capacity, self._act_dim), dtype=act_dtype),
            "next_obs": np.zeros((self._capacity, self._obs_dim), dtype=obs_dtype),
            "reward": np.zeros((self._capacity,), dtype=reward_dtype),
            "terminated": np.zeros((self._capacity,), dtype=bool),
            "truncated": np.zeros((self._capacity,), dtype=bool),
        }
        self._position = 0  # next slot to write
        self._size = 0  # number of stored transitions
        self._num_added = 0  # transitions ever added (including overwritten ones)
        self._cache: Dict[object, np.ndarray] = {}  # episode structure; cleared on every write

    # ------------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        """Maximum number of stored transitions."""
        return self._capacity

    @property
    def obs_dim(self) -> int:
        """Observation size ``d``."""
        return self._obs_dim

    @property
    def act_dim(self) -> int:
        """Action size ``a``."""
        return self._act_dim

    @property
    def position(self) -> int:
        """Ring slot the next transition is written to."""
        return self._position

    @property
    def num_added(self) -> int:
        """Number of transitions ever added, including those since overwritten."""
        return self._num_added

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (f"ReplayBuffer(size={self._size}, capacity={self._capacity}, "
                f"obs_dim={self._obs_dim}, act_dim={self._act_dim})")

    # ------------------------------------------------------------------ writing

    def add(self, obs, act, next_obs, reward, terminated, truncated) -> None:
        """Appends one transition or a batch of consecutive transitions.

        Args:
            obs: [d] for one transition or [n, d] for a batch.
            act: [a] or [n, a].
            next_obs: same shape as ``obs``.
            reward: scalar or [n].
            terminated: scalar or [n], bool (or 0/1).
            truncated: scalar or [n], bool (or 0/1).

        Raises:
            ValueError: on mismatched shapes or batch lengths, non-finite values, or flags that
                are not boolean.
        """
        obs = np.asarray(obs)
        single = obs.ndim == 1
        rows = {
            "obs": self._as_rows("obs", obs, (self._obs_dim,), single),
            "act": self._as_rows("act", act, (self._act_dim,), single),
            "next_obs": self._as_rows("next_obs", next_obs, (self._obs_dim,), single),
            "reward": self._as_rows("reward", reward, (), single),
            "terminated": self._as_rows("terminated", terminated, (), single),
            "truncated": self._as_rows("truncated", truncated, (), single),
        }
        lengths = {name: len(value) for name, value in rows.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"ReplayBuffer.add: batch lengths differ: {lengths}.")
        n = lengths["obs"]
        if n == 0:
            return
        for name in ("obs", "act", "next_obs", "reward"):
            rows[name] = self._cast(name, rows[name])
        for name in ("terminated", "truncated"):
            rows[name] = self._as_flags(name, rows[name])

        # Same result as adding the rows one at a time: when n > capacity only the newest
        # `capacity` rows survive, and the ring position still advances by n.
        kept = min(n, self._capacity)
        slots = (self._position + np.arange(n - kept, n)) % self._capacity
        for name, value in rows.items():
            self._storage[name][slots] = value[n - kept:]
        self._position = int((self._position + n) % self._capacity)
        self._size = min(self._size + n, self._capacity)
        self._num_added += n
        self._cache = {}

    def _as_rows(self, name: str, value, row_shape: Tuple[int, ...], single: bool) -> np.ndarray:
        value = np.asarray(value)
        expected_ndim = len(row_shape) + (0 if single else 1)
        if value.ndim != expected_ndim or value.shape[value.ndim - len(row_shape):] != row_shape:
            expected = row_shape if single else ("n",) + row_shape
            form = "one transition" if single else "a batch (obs is [n, d])"
            raise ValueError(f"ReplayBuffer.add: {name} has shape {value.shape}, expected "
                             f"{tuple(expected)} for {form}.")
        return value[None] if single else value

    def _cast(self, name: str, value: np.ndarray) -> np.ndarray:
        if value.dtype.kind not in "biuf":
            raise ValueError(f"ReplayBuffer.add: {name} must be numeric, got dtype {value.dtype}.")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"ReplayBuffer.add: {name} contains NaN or inf.")
        dtype = self._storage[name].dtype
        cast = value.astype(dtype)
        if dtype.kind in "iu" and not np.array_equal(cast, value):
            raise ValueError(f"ReplayBuffer.add: {name} has values not representable as {dtype}.")
        if dtype.kind == "f" and not np.all(np.isfinite(cast)):
            raise ValueError(f"ReplayBuffer.add: {name} overflows {dtype}.")
        return cast

    @staticmethod
    def _as_flags(name: str, value: np.ndarray) -> np.ndarray:
        if value.dtype == bool:
            return value
        if value.dtype.kind not in "iuf" or not np.all((value == 0) | (value == 1)):
            raise ValueError(f"ReplayBuffer.add: {name} must be boolean (or 0/1).")
        return value.astype(bool)

    def clear(self) -> None:
        """Removes every transition (capacity and dtypes are kept)."""
        self._position = 0
        self._size = 0
        self._num_added = 0
        self._cache = {}

    # ------------------------------------------------------------------ reading

    def _physical(self, indices: np.ndarray) -> np.ndarray:
        """Ring slots of chronological ``indices``."""
        start = (self._position - self._size) % self._capacity
        return (start + indices) % self._capacity

    def take(self, indices) -> Dict[str, np.ndarray]:
        """Transitions at chronological ``indices`` (any integer array shape ``S``).

        Returns:
            A dict with ``obs`` [*S, d], ``act`` [*S, a], ``next_obs`` [*S, d], ``reward`` [*S],
            ``terminated`` [*S] and ``truncated`` [*S] (fresh copies).
        """
        self._require_nonempty("take")
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise ValueError(f"ReplayBuffer.take: indices must be integers, got {indices.dtype}.")
        if indices.size and (indices.min() < 0 or indices.max() >= self._size):
            raise ValueError(f"ReplayBuffer.take: indices must lie in [0, {self._size}), got "
                             f"range [{indices.min()}, {indices.max()}].")
        slots = self._physical(indices)
        return {name: self._storage[name][slots] for name in FIELDS}

    def as_dict(self) -> Dict[str, np.ndarray]:
        """Every stored transition, oldest first: ``obs`` [n, d], ..., ``truncated`` [n]."""
        slots = self._physical(np.arange(self._size))
        return {name: self._storage[name][slots] for name in FIELDS}

    get_all = as_dict

    def _require_nonempty(self, what: str) -> None:
        if self._size == 0:
            raise ValueError(f"ReplayBuffer.{what}: the buffer is empty.")

    @staticmethod
    def _require_generator(what: str, rng) -> None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"ReplayBuffer.{what}: rng must be a numpy.random.Generator "
                            f"(np.random.default_rng(seed)), got {type(rng).__name__}.")

    @staticmethod
    def _require_positive(what: str, name: str, value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"ReplayBuffer.{what}: {name} must be a positive integer, "
                             f"got {value!r}.")
        return int(value)

    def sample(self, rng: np.random.Generator, batch_size: int) -> Dict[str, np.ndarray]:
        """``batch_size`` transitions drawn uniformly with replacement (same dict as ``take``)."""
        self._require_generator("sample", rng)
        batch_size = self._require_positive("sample", "batch_size", batch_size)
        self._require_nonempty("sample")
        return self.take(rng.integers(0, self._size, size=batch_size))

    def bootstrap_indices(self, rng: np.random.Generator, num_members: int,
                          size: int | None = None, indices=None) -> np.ndarray:
        """Bootstrap resamples for an ensemble: int array [num_members, size].

        Each row is drawn uniformly with replacement from ``indices`` (chronological indices,
        e.g. the training part of ``split``; default: every stored transition), independently
        per member. ``size`` defaults to ``len(indices)`` (the classic bootstrap). Use
        ``buffer.take(...)`` for the batches.
        """
        self._require_generator("bootstrap_indices", rng)
        num_members = self._require_positive("bootstrap_indices", "num_members", num_members)
        self._require_nonempty("bootstrap_indices")
        pool = np.arange(self._size) if indices is None else np.asarray(indices)
        if pool.ndim != 1 or pool.size == 0 or pool.dtype.kind not in "iu":
            raise ValueError("ReplayBuffer.bootstrap_indices: indices must be a non-empty 1-D "
                             "integer array.")
        size = len(pool) if size is None else self._require_positive(
            "bootstrap_indices", "size", size)
        return pool[rng.integers(0, len(pool), size=(num_members, size))]

    def split(self, rng: np.random.Generator, holdout_fraction: float,
              max_holdout: int | None = None,
              sequence_length: int | None = None) -> Tuple[np.ndarray, np.ndarray]:
        """A random train/holdout partition of the stored transitions (or of the windows).

        Args:
            rng: the generator of the one permutation drawn.
            holdout_fraction: in [0, 1). The holdout has ``round(holdout_fraction * n)`` of the
                ``n`` units, at least one when ``holdout_fraction > 0`` and ``n >= 2``, at most
                ``max_holdout``.
            max_holdout: optional cap on the holdout size.
            sequence_length: if given, the units are the windows of that many steps within one
                episode, identified by their start (``sequence_starts(sequence_length)``);
                otherwise the units are single transitions.

        Returns:
            ``(train_indices, holdout_indices)``: disjoint chronological (start) index arrays
            whose union is every unit, each sorted.

        Raises:
            ValueError: when the buffer is empty or no stored episode has ``sequence_length``
                steps.
        """
        self._require_generator("split", rng)
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"ReplayBuffer.split: holdout_fraction must be in [0, 1), got "
                             f"{holdout_fraction!r}.")
        self._require_nonempty("split")
        if sequence_length is None:
            units = np.arange(self._size)
        else:
            length = self._require_positive("split", "sequence_length", sequence_length)
            units = self._sequence_starts(length)
            if units.size == 0:
                raise ValueError(f"ReplayBuffer.split: no stored episode has {length} contiguous "
                                 f"steps (longest has {self.episode_lengths().max()}).")
        n = len(units)
        num_holdout = 0
        if holdout_fraction > 0 and n >= 2:
            num_holdout = max(1, int(round(holdout_fraction * n)))
            if max_holdout is not None:
                num_holdout = min(num_holdout, int(max_holdout))
        permutation = units[rng.permutation(n)]
        return np.sort(permutation[num_holdout:]), np.sort(permutation[:num_holdout])

    @staticmethod
    def window_indices(starts, length: int) -> np.ndarray:
        """Chronological indices [*S, length] of the windows of ``length`` steps that begin at
        ``starts`` (any integer array shape ``S``); ``take`` them for the windows' batch."""
        starts = np.asarray(starts)
        return starts[..., None] + np.arange(length)

    # ------------------------------------------------------------------ episodes

    def episode_ends(self) -> np.ndarray:
        """Bool [n], chronological: True where a transition is the last of its episode.

        True on ``terminated | truncated`` and where ``next_obs[t] != obs[t + 1]``. The newest
        transition is marked only by its own flags (its episode may still be running).
        """
        return self._episode_ends().copy()

    def _episode_ends(self) -> np.ndarray:
        if "ends" not in self._cache:
            slots = self._physical(np.arange(self._size))
            storage = self._storage
            ends = storage["terminated"][slots] | storage["truncated"][slots]
            if self._size > 1:
                ends[:-1] |= np.any(
                    storage["next_obs"][slots[:-1]] != storage["obs"][slots[1:]], axis=-1)
            self._cache["ends"] = ends
        return self._cache["ends"]

    def episode_starts(self) -> np.ndarray:
        """Chronological indices of the first stored transition of each episode, ascending.

        Index 0 is always a start (after wrap-around, its episode may have begun earlier).
        """
        if self._size == 0:
            return np.zeros((0,), dtype=np.int64)
        ends = self._episode_ends()
        return np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1]).astype(np.int64)

    def episode_lengths(self) -> np.ndarray:
        """Stored length of each episode, in the order of ``episode_starts()``."""
        starts = self.episode_starts()
        return np.diff(np.append(starts, self._size))

    def sequence_starts(self, length: int) -> np.ndarray:
        """Chronological indices ``t`` where ``t .. t + length - 1`` lie in one episode.

        The window may end on the episode's final transition but never continues past it.
        """
        length = self._require_positive("sequence_starts", "length", length)
        return self._sequence_starts(length).copy()

    def _sequence_starts(self, length: int) -> np.ndarray:
        if ("starts", length) not in self._cache:
            if self._size < length:
                starts = np.zeros((0,), dtype=np.int64)
            else:
                # Episode ends among steps t .. t + length - 2 (all but the window's last step).
                cumulative = np.concatenate([[0], np.cumsum(self._episode_ends(), dtype=np.int64)])
                starts = np.arange(self._size - length + 1)
                inner_ends = cumulative[starts + length - 1] - cumulative[starts]
                starts = starts[inner_ends == 0]
            self._cache[("starts", length)] = starts
        return self._cache[("starts", length)]

    def sample_sequences(self, rng: np.random.Generator, batch_size: int,
                         length: int) -> Dict[str, np.ndarray]:
        """``batch_size`` windows of ``length`` contiguous steps within one episode each.

        Start points are drawn uniformly with replacement from ``sequence_starts(length)``.

        Returns:
            The ``take`` dict with a leading [batch_size, length] shape: ``obs`` [B, L, d],
            ``act`` [B, L, a], ``next_obs`` [B, L, d], ``reward`` [B, L], flags [B, L].

        Raises:
            ValueError: when the buffer is empty or no stored episode has ``length`` steps.
        """
        self._require_generator("sample_sequences", rng)
        batch_size = self._require_positive("sample_sequences", "batch_size", batch_size)
        length = self._require_positive("sample_sequences", "length", length)
        self._require_nonempty("sample_sequences")
        starts = self._sequence_starts(length)
        if starts.size == 0:
            raise ValueError(f"ReplayBuffer.sample_sequences: no stored episode has {length} "
                             f"contiguous steps (longest has {self.episode_lengths().max()}).")
        chosen = starts[rng.integers(0, starts.size, size=batch_size)]
        return self.take(self.window_indices(chosen, length))

    # ------------------------------------------------------------------ persistence

    def save(self, path: PathLike) -> None:
        """Writes the buffer to ``path`` (one ``.npz`` file, name used as given), atomically.

        The file is written next to ``path`` under a temporary name and moved into place with
        ``os.replace``, so a run killed mid-save leaves the previous file intact.
        """
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        # Before the ring wraps, the stored rows are slots [0, size); after, every slot is used.
        arrays = {name: self._storage[name][:self._size] for name in FIELDS}
        meta = {
            "format_name": np.array(_FORMAT_NAME),
            "format_version": np.array(_FORMAT_VERSION),
            "capacity": np.array(self._capacity),
            "position": np.array(self._position),
            "size": np.array(self._size),
            "num_added": np.array(self._num_added),
        }
        fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".replay_buffer.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays, **meta)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        except BaseException:
            if os.path.exists(tmp_path):
                os.remove(tmp_path)
            raise

    @classmethod
    def load(cls, path: PathLike) -> "ReplayBuffer":
        """Reads a buffer written by ``save``: contents, dtypes, capacity, ring position, counts.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a saved ``ReplayBuffer`` or is inconsistent.
        """
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                contents = {name: npz[name] for name in npz.files}
        except FileNotFoundError:
            raise
        except Exception as error:  # not an npz (zip) file, or unreadable
            raise ValueError(f"ReplayBuffer.load: {path} is not a saved ReplayBuffer "
                             f"({type(error).__name__}: {error}).") from None
        required = set(FIELDS) | {"format_name", "format_version", "capacity", "position",
                                  "size", "num_added"}
        missing = sorted(required - set(contents))
        if missing or str(contents["format_name"]) != _FORMAT_NAME:
            raise ValueError(f"ReplayBuffer.load: {path} is not a saved ReplayBuffer "
                             f"(missing {missing or ['format_name']}).")
        if int(contents["format_version"]) != _FORMAT_VERSION:
            raise ValueError(f"ReplayBuffer.load: {path} has format version "
                             f"{int(contents['format_version'])}, expected {_FORMAT_VERSION}.")
        capacity, size = int(contents["capacity"]), int(contents["size"])
        position = int(contents["position"])
        obs, act = contents["obs"], contents["act"]
        if (obs.ndim != 2 or act.ndim != 2 or not 0 <= size <= capacity
                or not 0 <= position < capacity
                or any(contents[name].shape[:1] != (size,) for name in FIELDS)):
            raise ValueError(f"ReplayBuffer.load: {path} is an inconsistent ReplayBuffer file.")
        buffer = cls(capacity, obs.shape[1], act.shape[1], obs_dtype=obs.dtype,
                     act_dtype=act.dtype, reward_dtype=contents["reward"].dtype)
        for name in FIELDS:
            buffer._storage[name][:size] = contents[name]
        buffer._position = position
        buffer._size = size
        buffer._num_added = int(contents["num_added"])
        return buffer
