"""A progress bar for long loops (the fit's epochs, the GAN's steps), drawn on a terminal only."""

from __future__ import annotations

import sys


class Progress:
    """A rich progress bar on a terminal, nothing otherwise."""

    def __init__(self, name: str, total: int):
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(transient=True)
            self.task = self.bar.add_task(name, total=total)
            self.bar.start()

    def advance(self, description: str) -> None:
        """One step done; `description` replaces the bar's label."""
        if self.bar:
            self.bar.update(self.task, advance=1, description=description)

    def close(self) -> None:
        """Stop drawing (the bar is transient: it leaves no line behind)."""
        if self.bar:
            self.bar.stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also when an on_epoch hook raises (a pruned trial), or rich keeps drawing
