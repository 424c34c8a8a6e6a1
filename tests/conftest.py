"""Shared fixtures (real SQLite files, a real PostgreSQL server) and the rules for real components.

Real components are the parts a test cannot fake: real ALFWorld, PostgreSQL, TextWorld-Express
(a JVM), a real LLM server. A test that needs one carries its marker (`alfworld`, `postgres`,
`twx`, `llm_server`; registered in pyproject.toml) or uses it through a fixture that says so
(`pg_url`); code that finds a part missing calls `missing(name, reason)` (or `require(name)`).
That skips with the reason, or under CI (`CI=true`) fails with it: a green CI run cannot hide a
missing part. Other skips stay skips under CI: they say a condition of this machine, not a part
CI failed to provide (the GPU-only test on a machine with no GPU). Each run
counts the tests that ran against each part and the real games played, prints the counts, and
appends them to $SKILLMEM_TEST_TALLY when that is set (`.ci/run` prints the sum at the end).
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import json
import os
import shutil
import sys
import uuid
from typing import NoReturn

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_URL = os.environ.get("SKILLMEM_TEST_PG_URL")
CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# --- real components -------------------------------------------------------------------------

def _missing_alfworld() -> str | None:
    try:
        import alfworld.agents.environment.alfred_tw_env  # noqa: F401
        import textworld  # noqa: F401
    except ImportError as e:
        return f"real ALFWorld is not installed ({e}): run `bash .ci/alfworld.sh .venv/bin/python`"
    from eval.envs.alfworld_env import games_root

    if not (games_root() / "train").is_dir():
        return f"no ALFWorld games under {games_root()}: set SKILLMEM_ALFWORLD_DIR to the shared games folder"
    return None


def _missing_postgres() -> str | None:
    if not PG_URL:
        return "no PostgreSQL: set SKILLMEM_TEST_PG_URL (./run test starts a local server when run as root)"
    return None


def _missing_java() -> str | None:
    if not shutil.which("java"):
        return ("TextWorld-Express needs Java (a JRE 11 or later) and there is no `java` on PATH: "
                "apt-get install default-jre-headless")
    return None


# name -> (what it is, a check that returns why it is missing or None). A component without a
# check is checked by its own fixture (which calls `missing`).
COMPONENTS: dict[str, tuple[str, object]] = {
    "alfworld": ("real ALFWorld", _missing_alfworld),
    "postgres": ("PostgreSQL", _missing_postgres),
    "twx": ("TextWorld-Express", _missing_java),
    "llm_server": ("a real LLM server", None),
}
# Fixtures that start or hand out a real component: a test that uses one ran against it.
COMPONENT_FIXTURES = {"pg_url": "postgres", "llamacpp_server": "llm_server"}
# Real games played in this process, counted where the game engine resets (whoever calls it;
# an env that restores its game by replaying it resets the engine again and counts again).
GAMES = {"alfworld": 0, "twx": 0}
_TESTS: dict[str, int] = {name: 0 for name in COMPONENTS}
_used_now: set[str] = set()
_skipped_now = False


def missing(name: str, reason: str) -> NoReturn:
    """Stops the running test, fixture or test module (at import): real component `name` is not here.

    Outside CI it skips with `reason` (say what to install or set); under CI it fails with it.
    """
    if name not in COMPONENTS:
        raise ValueError(f"unknown real component {name!r}; add it to COMPONENTS in tests/conftest.py")
    what = f"missing real component ({COMPONENTS[name][0]}): {reason}"
    if CI:
        pytest.fail(f"CI=true: {what}. Under CI a required real component that is missing is a failure, "
                    "not a skip (./run test installs or starts it; its output above says why it could not)",
                    pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require(name: str) -> None:
    """Calls `missing` when component `name`'s check finds it absent (at module level or in a test)."""
    check = COMPONENTS[name][1]
    reason = check() if check is not None else None
    if reason:
        missing(name, reason)


def real_part_used(name: str) -> None:
    """Counts the running test as one that ran against component `name` (for fixtures that start one)."""
    if name not in COMPONENTS:
        raise ValueError(f"unknown real component {name!r}; add it to COMPONENTS in tests/conftest.py")
    _used_now.add(name)


def _count_resets(cls, name: str) -> None:
    reset = cls.reset
    if getattr(reset, "_skillmem_counted", False):
        return

    def counted(self, *a, **kw):
        GAMES[name] += 1
        _used_now.add(name)
        return reset(self, *a, **kw)

    counted._skillmem_counted = True
    cls.reset = counted


# The game engines whose resets are counted: module -> (class, component). textworld takes seconds
# to import, so each is patched when something first imports it, not up front.
_ENGINES = {"textworld.envs.pddl.pddl": ("PddlEnv", "alfworld"),  # under every real ALFWorld game
            "textworld_express.textworld_express": ("TextWorldExpressEnv", "twx")}


class _CountOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _ENGINES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        cls_name, component = _ENGINES[fullname]

        def exec_and_count(module):
            exec_module(module)
            _count_resets(getattr(module, cls_name), component)

        spec.loader.exec_module = exec_and_count
        return spec


def pytest_configure(config):
    if CI:  # a module skipped at import fails its collection: run the rest so every cause shows at once
        config.option.continue_on_collection_errors = True
    for module, (cls_name, component) in _ENGINES.items():
        if module in sys.modules:
            _count_resets(getattr(sys.modules[module], cls_name), component)
    sys.meta_path.insert(0, _CountOnImport())


def pytest_runtest_setup(item):
    for name in COMPONENTS:
        if item.get_closest_marker(name) is not None:
            require(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _skipped_now
    _used_now.clear()
    _skipped_now = False
    yield
    if not _skipped_now:
        used = _used_now | {m.name for m in item.iter_markers() if m.name in COMPONENTS}
        used |= {COMPONENT_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in COMPONENT_FIXTURES}
        for name in used:
            _TESTS[name] += 1


def _plain_traceback(exc: BaseException) -> str:
    lines = ["Traceback (pytest could not format it: one of its entries has no line number):"]
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb = tb.tb_next
    return "\n".join(lines + [f"{type(exc).__name__}: {exc}"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    global _skipped_now
    outcome = yield
    try:
        rep = outcome.get_result()
    except TypeError:
        # pytest's traceback formatting fails on an entry whose tb_lineno is None (seen on
        # Python 3.11 for a pytest-timeout failure raised from its signal handler), and the
        # INTERNALERROR ended the whole slow suite. Report that test's failure with its frames
        # as Python has them instead, and go on with the next test.
        if call.excinfo is None:
            raise
        plain = copy.copy(call)
        plain.excinfo = _plain_traceback(call.excinfo.value)  # a string: reported as the failure's text
        rep = pytest.TestReport.from_item_and_call(item, plain)
        outcome.force_result(rep)
    if rep.skipped and not hasattr(rep, "wasxfail"):
        _skipped_now = True  # not counted as run against its components


def _tally() -> dict:
    return {name: {"what": COMPONENTS[name][0], "tests": _TESTS[name],
                   **({"games": GAMES[name]} if name in GAMES else {})} for name in COMPONENTS}


def pytest_terminal_summary(terminalreporter):
    parts = []
    for name, t in _tally().items():
        games = f", {t['games']} games" if "games" in t else ""
        parts.append(f"{t['what']}: {t['tests']} tests{games}")
    terminalreporter.write_line("real components (tests that ran, not skipped): " + "; ".join(parts))


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("SKILLMEM_TEST_TALLY")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"args": list(session.config.invocation_params.args), "exitstatus": int(exitstatus),
                                "components": _tally()}) + "\n")


# --- fixtures --------------------------------------------------------------------------------


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

    import time

    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(20):
            try:
                with admin.connect() as c:
                    c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                return
            except sa.exc.ProgrammingError as exc:
                # A backend still starting up has no role yet, and PostgreSQL refuses to terminate
                # it ("must be a member of the role whose process is being terminated"): a
                # connection of the test's own pool, mid-handshake. Wait for it to finish.
                if "InsufficientPrivilege" not in type(exc.orig).__name__ or attempt == 19:
                    raise
                time.sleep(0.25)
    finally:
        admin.dispose()


@pytest.fixture
def pg_url():
    require("postgres")
    real_part_used("postgres")
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
