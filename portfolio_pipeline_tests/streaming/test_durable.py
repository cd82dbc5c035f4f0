"""The durable line files of the streaming service: private mode, appends, atomic rewrite."""

from __future__ import annotations

import stat
from pathlib import Path

from streaming_service.durable import append_lines, rewrite_lines


def test_append_then_rewrite_keeps_the_file_private_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append_lines(path, "a\n")
    append_lines(path, "b\nc\n")
    assert path.read_text(encoding="utf-8") == "a\nb\nc\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    rewrite_lines(path, ["c\n"])
    assert path.read_text(encoding="utf-8") == "c\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]
