"""Shared fixtures: real SQLite files and a real PostgreSQL server (SKILLMEM_TEST_PG_URL)."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_URL = os.environ.get("SKILLMEM_TEST_PG_URL")


def _fresh_pg_database() -> str:
    """A new, empty database on the test server; dropped by the caller."""
    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def _drop_pg_database(url: str) -> None:
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture
def pg_url():
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must provide SKILLMEM_TEST_PG_URL (./run test starts PostgreSQL)")
        pytest.skip("no PostgreSQL: set SKILLMEM_TEST_PG_URL or run ./run test as root")
    url = _fresh_pg_database()
    yield url
    _drop_pg_database(url)


def open_memory(db, tmp_path, **kw):
    """A SkillMemory with the fast hashing embedder and its index in tmp_path (memory tests)."""
    from skillmem import SkillMemory
    from skillmem.embed import HashingEmbedder

    kw.setdefault("embedder", HashingEmbedder())
    return SkillMemory(db, index_dir=tmp_path / "index", **kw)


@pytest.fixture
def mem(db_url, tmp_path):
    m = open_memory(db_url, tmp_path)
    yield m
    m.close()


@pytest.fixture
def sqlite_url(tmp_path):
    return str(tmp_path / "skillmem.db")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """The same test against a SQLite file and a PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "skillmem.db")
    else:
        yield request.getfixturevalue("pg_url")
from openai_server import openai_server  # noqa: F401,E402  (a real HTTP server on loopback)
