"""How ``--help`` renders the commands' docstrings.

Markdown: a docstring's paragraphs are joined into lines that fit the
terminal, and ``code`` is shown as code. Typer's default kept each source line
break, so help broke mid-sentence ("... and which one / the configured ...")
and showed the double backquotes.
"""

from __future__ import annotations

from typing import Literal

HELP_MARKUP: Literal["markdown"] = "markdown"

#: A boolean flag's value in ``--help``: none. Typer 0.29 showed ``<bool>``
#: (``--recursive -r <bool>``), as if ``-r true`` were meant; a flag takes no
#: value, and ``true`` was then read as a file to upscale.
FLAG = ""
