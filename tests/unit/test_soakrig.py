"""The soak scripts' growth verdict: a rising floor is a leak, a passing peak is not."""

from soakrig import after_warmup, floor_grew


def _samples(fds: list[int]) -> list[dict[str, int]]:
    return [{"fds": n} for n in fds]


def test_a_passing_peak_is_not_growth() -> None:
    s = _samples([21, 21, 21, 21, 22, 21, 21, 21, 21, 22])
    assert not floor_grew(s, after_warmup(s, 2), "fds")


def test_a_rising_floor_is_growth() -> None:
    s = _samples([21, 21, 21, 21, 22, 22, 23, 23, 24, 24])
    assert floor_grew(s, after_warmup(s, 2), "fds")


def test_a_short_run_judges_its_last_sample() -> None:
    s = _samples([21, 22])
    assert not floor_grew(s, after_warmup(s, 2), "fds")
    s = _samples([21, 21, 22])
    assert floor_grew(s, after_warmup(s, 1), "fds")
