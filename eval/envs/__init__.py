"""Text environments that share one protocol (see base.py): household, TextWorld-Express, real ALFWorld."""

from __future__ import annotations

from eval.envs.base import TaskSpec, TextEnv, list_tasks, make_env

__all__ = ["TaskSpec", "TextEnv", "list_tasks", "make_env"]
