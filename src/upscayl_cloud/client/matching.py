"""Which of a run's files a server's answer or refusal means.

The spec names a task's files by the ``fileName`` get-upload-url returned,
but does not promise that a ``ProcessedFile`` repeats it exactly (a server
may list the store's key, or a name of its own), nor how a refusal names the
file it blames. Each rule here matches a file only when no other file of the
batch could be meant: dropping or crediting the wrong file is worse than
matching none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from upscayl_cloud.client._core import wire_name
from upscayl_cloud.client.files import Source


def delivered_entry(
    files: Sequence[Any], file_name: str, sources: Mapping[str, Source]
) -> Mapping[str, Any] | None:
    """The ``ProcessedFile`` of the upload ``file_name`` among ``files`` (a
    status's list), one of ``sources`` (the task's uploads, by fileName).

    By its ``fileName``; else by ``originalFileName``, the name it was
    uploaded under, when no other file of the task was uploaded under that
    name and one listed file alone carries it; else, for a task of one file
    listing one file, that file. A completed, charged task whose list named
    the file otherwise was reported "failed: task completed"."""
    listed = [f for f in files if isinstance(f, Mapping)]
    exact = next((f for f in listed if f.get("fileName") == file_name), None)
    if exact is not None:
        return exact
    # A file listed under another upload's fileName is that upload's.
    free = [f for f in listed if f.get("fileName") not in sources]
    original = {name: wire_name(source.path.name) for name, source in sources.items()}
    mine = original.get(file_name)
    if mine is not None and list(original.values()).count(mine) == 1:
        named = [f for f in free if f.get("originalFileName") == mine]
        if len(named) == 1:
            return named[0]
    if len(sources) == 1 and len(listed) == 1:
        return listed[0]
    return None


#: What may stand on either side of a file name quoted bare in a message:
#: the message's start or end, white space, quotes and brackets, or a
#: separator. A name's own characters (letters, digits, ``.``, ``-``, ``_``,
#: ``/``) never do, so ``a.png`` is not found in ``ba.png`` or ``a.png.png``.
_BEFORE = r"(?:^|(?<=[\s'\"`(\[{<,;:=]))"
_AFTER = r"(?=$|[\s'\"`)\]}>,;:]|[.!?](?:\s|$))"


def named_once(message: str, names: Sequence[str]) -> int | None:
    """The index of the one name of ``names`` that ``message`` quotes as a
    whole (bare, or in any quotes), else None: none named, or more than one.

    A name found only inside a longer name that the message also quotes
    (``photo.png`` within ``my photo.png``) does not count."""
    spans: list[tuple[int, int, int]] = []
    for index, name in enumerate(names):
        if not name:
            continue
        pattern = _BEFORE + re.escape(name) + _AFTER
        spans.extend((m.start(), m.end(), index) for m in re.finditer(pattern, message))
    whole = {
        index
        for start, end, index in spans
        if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)
    }
    return whole.pop() if len(whole) == 1 else None
