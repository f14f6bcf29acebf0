from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.pagination import page_of


def test_pages_walk_the_whole_list_once() -> None:
    items, token, seen = list(range(7)), "", []
    while True:
        page, token = page_of(items, 3, token)
        seen += page
        if not token:
            break
    assert seen == items


@pytest.mark.parametrize(("size", "token"), [(-1, ""), (10, "abc"), (10, "-3")])
def test_bad_page_requests(size: int, token: str) -> None:
    with pytest.raises(InvalidArgument):
        page_of([1, 2], size, token)
