"""Progress reporting for the stages: rich progress bars on a terminal, nothing in Lambdas and tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Advance = Callable[[int], None]


class ProgressReporter(Protocol):
    """Something that can show a bar for a unit of work of known size."""

    def task(self, description: str, total: int) -> AbstractContextManager[Advance]:
        """A context manager yielding ``advance(n)``."""
        ...


class NullProgress:
    """Reports nothing."""

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        yield _ignore


def _ignore(n: int = 1) -> None:
    """Advance nothing."""


class RichProgress:
    """One rich progress display shared by every stage of a run."""

    def __init__(self, console: object | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console if console is not None else Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,  # type: ignore[arg-type]
            transient=False,
        )

    def __enter__(self) -> RichProgress:
        self._started = False  # the display starts with its first bar: a run that fails before one prints nothing
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._progress.stop()

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        if not getattr(self, "_started", True):
            self._progress.start()
            self._started = True
        task_id = self._progress.add_task(description, total=max(total, 1))

        def advance(n: int = 1) -> None:
            self._progress.advance(task_id, n)

        try:
            yield advance
        finally:
            self._progress.update(task_id, completed=max(total, 1))
