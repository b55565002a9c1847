"""Time buckets computed in the database, the same on PostgreSQL and SQLite."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement


class epoch(FunctionElement[int]):
    """Whole seconds since 1970 of a UTC timestamp column (naive UTC in the database)."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch"


@compiles(epoch, "postgresql")
def _epoch_postgresql(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(next(iter(element.clauses)), **kw)
    return f"CAST(floor(extract(epoch from {column})) AS BIGINT)"


@compiles(epoch, "sqlite")
def _epoch_sqlite(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(next(iter(element.clauses)), **kw)
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


@dataclass(frozen=True)
class Window:
    """A chart's span: `count` buckets of `seconds` each, the last one holding `end`."""

    name: str  # hour | day
    seconds: int
    count: int
    end: datetime

    @property
    def first(self) -> int:
        """The first bucket's number (epoch seconds // bucket size)."""
        return self.last - self.count + 1

    @property
    def last(self) -> int:
        return int(self.end.timestamp()) // self.seconds

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.first * self.seconds, UTC)

    def bucket(self, column: ColumnElement[Any] | InstrumentedAttribute[Any]) -> ColumnElement[int]:
        """The bucket number of a timestamp column, in SQL."""
        return epoch(column) // self.seconds

    def starts(self) -> list[datetime]:
        return [self.start + timedelta(seconds=i * self.seconds) for i in range(self.count)]


WINDOWS = {"hour": (60, 60), "day": (15 * 60, 96)}  # per minute for an hour, 15 min for a day


def window(name: str, end: datetime) -> Window:
    seconds, count = WINDOWS[name]
    return Window(name, seconds, count, end)
