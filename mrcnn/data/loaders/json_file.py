"""Reading an annotation JSON file with errors that name the file and position."""

import json
import os


def read_json_file(path, kind):
    """The parsed content of the JSON file at ``path``.

    Args:
        path: str or path-like.
        kind: what the file is, for messages (e.g. ``"COCO annotation file"``).

    Raises:
        FileNotFoundError: naming the file.
        ValueError: the file is not valid JSON; names the file, line and column.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{kind} {path!r} does not exist")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{kind} {path!r} is not valid JSON: {exc.msg} at line "
                         f"{exc.lineno} column {exc.colno} (char {exc.pos})") from exc
