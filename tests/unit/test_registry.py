"""The registry's checks of what a client names, when the file system refuses (no root)."""

import errno
import os
from typing import Any

import pytest

from tapveth.control import ControlError
from tapveth.core.linkspec import EndSpec
from tapveth.daemon.registry import Registry


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENAMETOOLONG, errno.ELOOP, errno.EIO])
def test_check_free_turns_any_stat_failure_into_one_line(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(path: Any, *args: Any, **kw: Any) -> Any:
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(os, "stat", refuse)
    with pytest.raises(ControlError) as info:
        Registry(1).check_free(EndSpec(name="a", netns="n" * 3000), os.getpid())
    message = str(info.value)
    assert os.strerror(code) in message and "\n" not in message and len(message) < 200
