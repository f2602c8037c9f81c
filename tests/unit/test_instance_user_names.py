"""The shape of an instance's own user's name, made from its id or from a spare place's."""

from __future__ import annotations

import pytest

from cove.common.service_user import (
    instance_user_name,
    is_instance_user_name,
    remove_instance_user,
)


def test_instance_and_spare_names_are_instance_users_and_others_are_not() -> None:
    assert is_instance_user_name(instance_user_name("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"))
    assert is_instance_user_name("cove-0123456789abcdef")  # a spare place's
    for other in (
        "cove",
        "root",
        "cove-",
        "cove-0123456789abcde",
        "cove-0123456789abcdeg",
        "cove-0123456789ABCDEF",
        "cove-0123456789abcdef0",
        "xcove-0123456789abcdef",
    ):
        assert not is_instance_user_name(other), other


def test_only_an_instance_users_name_is_removed() -> None:
    with pytest.raises(ValueError):
        remove_instance_user("cove")
