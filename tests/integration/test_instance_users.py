"""Instances' own users, for real (``cove.common.service_user``): made with a uid never given
before on the host, found by name, and removed; a uid freed by a removal is not given again."""

from __future__ import annotations

import os
import pwd
import uuid

import pytest

from cove.common.service_user import (
    FIRST_UID,
    ensure_instance_user,
    instance_user,
    instance_user_name,
    remove_instance_user,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root makes users"),
]


def test_users_get_fresh_uids_and_go_with_their_instance() -> None:
    gid = os.getgid()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        one = ensure_instance_user(first, gid)
        assert one.uid >= FIRST_UID and one.gid == gid
        assert one.name == instance_user_name(first) and len(one.name) <= 32
        assert ensure_instance_user(first, gid) == one  # made once
        assert pwd.getpwnam(one.name).pw_shell == "/usr/sbin/nologin"
        remove_instance_user(one.name)
        assert instance_user(first) is None
        remove_instance_user(one.name)  # idempotent
        with pytest.raises(ValueError):
            remove_instance_user("root")
        # The freed uid is not given again, though it is the highest free one.
        two = ensure_instance_user(second, gid)
        assert two.uid > one.uid
    finally:
        for instance_id in (first, second):
            remove_instance_user(instance_user_name(instance_id))
