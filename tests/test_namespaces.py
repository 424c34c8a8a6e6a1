"""Writes stay in the namespace given; no namespace or task type name can break the index's partitions."""

from __future__ import annotations

import pytest

from conftest import open_memory
from skillmem.cli import main as cli
from skillmem.curate import CurationError
from skillmem.episode import DemonstrationBase, LessonBase


def test_cli_lesson_writes_are_scoped_to_the_namespace_given(db_url, tmp_path, capsys):
    mem = open_memory(db_url, tmp_path)
    a_id, _ = mem.add_lesson(LessonBase(trigger="tenant A's rule", fix="A's fix"), namespace="A")
    b_id, _ = mem.add_lesson(LessonBase(trigger="tenant B's rule", fix="B's fix"), namespace="B")
    mem.close()
    for action in ("retire", "approve", "restore"):
        assert cli(["--db", db_url, "lessons", action, str(b_id), "-n", "A"]) == 1
        assert "namespace 'A'" in capsys.readouterr().err
    mem = open_memory(db_url, tmp_path)
    try:
        assert mem.lessons(namespace="B")[0].status.value == "active"
        with pytest.raises(CurationError, match="namespace 'A'"):
            mem.edit_lesson(b_id, fix="rewritten by A", namespace="A")
        assert mem.lessons(namespace="B")[0].fix == "B's fix"
    finally:
        mem.close()
    assert cli(["--db", db_url, "lessons", "retire", str(a_id), "-n", "A"]) == 0
    mem = open_memory(db_url, tmp_path)
    try:
        assert mem.lessons(namespace="A")[0].status.value == "retired"
        assert mem.lessons(namespace="B")[0].status.value == "active"
    finally:
        mem.close()


@pytest.mark.parametrize("ns,task_type", [
    ("team/lesson/x", "refund"),
    ("team", "refund/lesson/general"),
    ("a/demo/task:b", "t/lesson/u"),
    ("50% off", "task:x"),
])
def test_names_with_slashes_keep_their_own_partitions(db_url, tmp_path, ns, task_type):
    mem = open_memory(db_url, tmp_path)
    try:
        lid, _ = mem.add_lesson(LessonBase(trigger="the order id is unknown", fix="look it up", task_type=task_type),
                                namespace=ns)
        did, _ = mem.add_demonstration(DemonstrationBase(task_type=task_type, goal_template="refund order [id]",
                                                         plan=["lookup_order(order_id=[id])"]), namespace=ns)
        # A neighbour whose name starts with this one's and "/lesson" must stay out of its searches.
        mem.add_lesson(LessonBase(trigger="the order id is unknown", fix="neighbour's", task_type=task_type),
                       namespace=f"{ns}/lesson")
        mem.index.save()
    finally:
        mem.close()
    mem = open_memory(db_url, tmp_path)  # from the saved index
    try:
        report = mem.index_check()
        assert report["ok"], report
        ctx = mem.retrieve("refund order 7, the order id is unknown", namespace=ns, task_type=task_type)
        assert [r.id for r in ctx.lessons] == [lid]
        assert [d.id for d in ctx.demonstrations] == [did]
    finally:
        mem.close()
