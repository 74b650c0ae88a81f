"""Real rqlite clients from PyPI against a live FlareDB node: pyrqlite (DB-API 2.0) and
sqlalchemy-rqlite (SQLAlchemy dialect)."""

from __future__ import annotations

import asyncio
import datetime
from urllib.parse import urlsplit

import pyrqlite.dbapi2 as rqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .conftest import LiveNode


def pyrqlite_cycle(url: str) -> None:
    parts = urlsplit(url)
    conn = rqlite.connect(host=parts.hostname, port=parts.port)
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT, n REAL)")
        cur.execute("INSERT INTO foo(name, n) VALUES(?, ?)", ("a'b", 1.5))
        assert cur.lastrowid == 1
        cur.executemany("INSERT INTO foo(name, n) VALUES(?, ?)", [("c", 2.0), ("d", None)])
        assert cur.rowcount == 2
        cur.execute("SELECT id, name, n FROM foo WHERE name = :name", {"name": "a'b"})
        row = cur.fetchone()
        assert (row["id"], row["name"], row["n"]) == (1, "a'b", 1.5)
        cur.execute("SELECT count(*) AS c FROM foo", consistency="strong")
        assert cur.fetchone()[0] == 3
        cur.execute("UPDATE foo SET n = 0 WHERE n IS NULL")
        assert cur.rowcount == 1
        with pytest.raises(rqlite.Error, match="UNIQUE constraint failed"):
            cur.execute("INSERT INTO foo(id, name) VALUES (1, 'dup')")
        # executemany is one ?transaction request: a failing row rolls back all of it.
        cur.executemany("INSERT INTO foo(id, name) VALUES(?, ?)", [(10, "x"), (1, "dup")])
        cur.execute("SELECT count(*) FROM foo WHERE id = 10")
        assert cur.fetchone()[0] == 0
    finally:
        conn.close()


def pyrqlite_declared_types(url: str) -> None:
    """DB-API detect_types: pyrqlite picks each column's converter by the declared type
    rqlite reports (PARSE_DECLTYPES), and its DATE/TIMESTAMP converters read rqlite's
    RFC 3339 form of those columns."""
    parts = urlsplit(url)
    conn = rqlite.connect(host=parts.hostname, port=parts.port, detect_types=rqlite.PARSE_DECLTYPES)
    rqlite.converters["NUMBER"] = float
    try:
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE typed (i INTEGER, f FLOAT, n NUMBER(5), b BOOL, d DATE, "
            "ts TIMESTAMP, bin BLOB, s VARCHAR(20))"
        )
        when = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
        cur.execute(
            "INSERT INTO typed VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (42, 2.0, 5, True, datetime.date(2024, 5, 6), when, b"\x00\xffbin", "text"),
        )
        cur.execute("SELECT * FROM typed")
        row = tuple(cur.fetchone())
        assert row == (42, 2.0, 5.0, True, datetime.date(2024, 5, 6), when, b"\x00\xffbin", "text")
        assert [type(v) for v in row] == [
            int,
            float,
            float,  # NUMBER(5): the converter is found by the declared type's first word
            bool,
            datetime.date,
            datetime.datetime,
            bytes,
            str,
        ]
    finally:
        del rqlite.converters["NUMBER"]
        conn.close()


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)
    score: Mapped[float | None]
    active: Mapped[bool] = mapped_column(default=True)


def sqlalchemy_cycle(url: str) -> None:
    parts = urlsplit(url)
    engine = sa.create_engine(f"rqlite+pyrqlite://{parts.hostname}:{parts.port}/")
    try:
        Base.metadata.create_all(engine)
        Base.metadata.create_all(engine)  # second time: sees the table, does nothing
        with Session(engine) as s:
            s.add_all([User(name="ann", score=1.5), User(name="bob", active=False)])
            s.commit()
        with Session(engine) as s:
            users = s.scalars(sa.select(User).order_by(User.name)).all()
            assert [(u.name, u.score, u.active) for u in users] == [
                ("ann", 1.5, True),
                ("bob", None, False),
            ]
            bob = users[1]
            bob.score = 7.0
            s.commit()
            assert s.scalar(sa.select(sa.func.count()).select_from(User)) == 2
            s.delete(users[0])
            s.commit()
            assert s.scalars(sa.select(User.name)).all() == ["bob"]
    finally:
        engine.dispose()


async def test_pyrqlite_dbapi(live_node: LiveNode) -> None:
    await asyncio.to_thread(pyrqlite_cycle, live_node.url)


async def test_pyrqlite_converters_by_declared_type(live_node: LiveNode) -> None:
    await asyncio.to_thread(pyrqlite_declared_types, live_node.url)


async def test_sqlalchemy_rqlite_orm(live_node: LiveNode) -> None:
    await asyncio.to_thread(sqlalchemy_cycle, live_node.url)
