"""Replay data: a numpy ring buffer of transitions (floor 1; imports only numpy)."""

from mbrl_bayes.data.replay_buffer import FIELDS, ReplayBuffer

__all__ = ["FIELDS", "ReplayBuffer"]
