"""The shared fakes of tests/fakes.py held to the real things they stand in for.

Each test runs over the fake and over the real thing: ``FakeBus`` and an ``RpcClient`` with
``RpcServer``s on the private Redis of the ``redis_server`` fixture; ``FakeDriver`` and a
``LocalDriver`` placing instances in a temporary directory and starting real guest agents (on a
bus they cannot reach, and with a server binary that does not exist: what is looked at is the
place and the agent process, never a database). A fake that drifts from its original fails
here. What the fakes do not claim to model (a call nobody answers waits out its timeout on
the real bus; the fake fails the test at once) is left out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cove.common import procfs
from cove.common.errors import ConfigurationError, InstanceNotFound, RemoteError, UnknownMethod
from cove.common.ids import new_id
from cove.common.settings import load_settings
from cove.compute.base import ComputeDriver
from cove.compute.local import LocalDriver
from cove.domain.guest import ConfigurationApplied, GuestSettings
from cove.domain.status import ComputeState
from cove.rpc import RequestContext, RpcClient, RpcServer, codec
from cove.rpc.guest import GuestClient
from fakes import FakeBus, FakeDriver
from servers import remove_tree

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting {what or 'for a condition'}"
        time.sleep(0.01)


# -- the bus ------------------------------------------------------------------------------------


class Bus:
    """A bus under test: ``client`` (what Cove's code holds) and a way to serve a topic."""

    def __init__(self, client: Any, serve: Callable[[str, Mapping[str, Any]], None]) -> None:
        self.client = client
        self.serve = serve


@pytest.fixture(params=["fake", "redis"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "fake":
        fake = FakeBus()
        yield Bus(fake, fake.serve)
        return
    url = request.getfixturevalue("redis_server").url
    client = RpcClient(url, connect_timeout=3)
    servers: list[RpcServer] = []
    topics: set[str] = set()

    def serve(topic: str, endpoints: Mapping[str, Any]) -> None:
        # One worker: requests run in the order they arrive, as the fake runs them.
        server = RpcServer(url, topic, endpoints, workers=1, connect_timeout=5)
        server.start()
        servers.append(server)
        topics.add(topic)

    try:
        yield Bus(client, serve)
    finally:
        stoppers = [threading.Thread(target=server.stop) for server in servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for topic in topics:
            client.delete_topic(topic)
        client.close()


@pytest.fixture
def topic() -> str:
    return f"contract.{uuid.uuid4().hex[:12]}"


class Recorder:
    """Endpoints that record what reached them, from whichever thread runs them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, dict[str, Any], RequestContext]] = []

    def got(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [args for name, args, _ctx in self.seen if name == method]

    def endpoints(self) -> dict[str, Callable[..., Any]]:
        def note(ctx: RequestContext, **args: Any) -> None:
            with self.lock:
                self.seen.append(("note", args, ctx))

        def add(ctx: RequestContext, a: int, b: int) -> dict[str, int]:
            return {"sum": a + b}

        def missing(ctx: RequestContext, name: str) -> None:
            raise InstanceNotFound(name)

        def broken(ctx: RequestContext) -> None:
            raise KeyError("no-such-key")

        def not_json(ctx: RequestContext) -> object:
            return {1, 2, 3}

        def ping(ctx: RequestContext) -> str:
            return "pong"

        return {
            "note": note,
            "add": add,
            "missing": missing,
            "broken": broken,
            "not_json": not_json,
            "ping": ping,
        }


def test_a_cast_reaches_the_server_of_its_topic(bus: Bus, topic: str) -> None:
    recorder = Recorder()
    bus.serve(topic, recorder.endpoints())
    ctx = RequestContext(project_id="proj", user_id="user")
    bus.client.cast(topic, "note", {"n": 1, "items": ["a", None], "nested": {"k": 2.5}}, ctx)
    wait_for(lambda: recorder.got("note") != [], what="for the cast")
    [(method, args, seen_ctx)] = recorder.seen
    assert (method, args) == ("note", {"n": 1, "items": ["a", None], "nested": {"k": 2.5}})
    assert seen_ctx == ctx


def test_a_call_returns_what_the_server_returned(bus: Bus, topic: str) -> None:
    bus.serve(topic, Recorder().endpoints())
    assert bus.client.call(topic, "add", {"a": 1, "b": 2}, timeout=10) == {"sum": 3}


def test_typed_clients_and_servers_meet_in_wire_values(bus: Bus) -> None:
    """A guest's RPC as the task manager makes it: typed on both sides, wire values between."""
    instance_id = new_id()
    received: list[tuple[int, dict[str, Any], int]] = []

    def apply_configuration(
        ctx: RequestContext,
        ram_mb: int,
        vcpus: int,
        volume_gb: int,
        overrides: dict[str, Any],
        revision: int,
    ) -> ConfigurationApplied:
        received.append((ram_mb, overrides, revision))
        return ConfigurationApplied(restart_required=True)

    guest = GuestClient(bus.client, instance_id, timeout=10)
    bus.serve(guest.topic, codec.endpoints({"apply_configuration": apply_configuration}))
    try:
        applied = guest.apply_configuration(RequestContext(), 512, 1, 2, {"work_mem": 4096}, 3)
        assert applied == ConfigurationApplied(restart_required=True)
        assert received == [(512, {"work_mem": 4096}, 3)]
    finally:
        guest.forget()


def test_a_cove_error_raised_by_the_server_is_raised_again_at_the_caller(
    bus: Bus, topic: str
) -> None:
    bus.serve(topic, Recorder().endpoints())
    with pytest.raises(InstanceNotFound) as caught:
        bus.client.call(topic, "missing", {"name": "x"}, timeout=10)
    assert caught.value.message == "x"


def test_any_other_exception_is_a_remote_error(bus: Bus, topic: str) -> None:
    bus.serve(topic, Recorder().endpoints())
    with pytest.raises(RemoteError) as caught:
        bus.client.call(topic, "broken", {}, timeout=10)
    assert caught.value.message == "KeyError: 'no-such-key'"
    with pytest.raises(RemoteError, match="not JSON-serialisable"):
        bus.client.call(topic, "not_json", {}, timeout=10)


def test_an_unknown_method_is_unknown_method_and_the_server_serves_on(bus: Bus, topic: str) -> None:
    bus.serve(topic, Recorder().endpoints())
    with pytest.raises(UnknownMethod, match="no_such_method"):
        bus.client.call(topic, "no_such_method", {}, timeout=10)
    assert bus.client.call(topic, "ping", {}, timeout=10) == "pong"


def test_what_goes_wrong_with_a_cast_stays_with_the_server(bus: Bus, topic: str) -> None:
    recorder = Recorder()
    bus.serve(topic, recorder.endpoints())
    bus.client.cast(topic, "no_such_method", {})
    bus.client.cast(topic, "broken", {})
    bus.client.cast(topic, "note", {"after": True})
    wait_for(lambda: recorder.got("note") == [{"after": True}], what="for the last cast")
    assert bus.client.call(topic, "ping", {}, timeout=10) == "pong"


def test_arguments_must_be_json(bus: Bus, topic: str) -> None:
    bus.serve(topic, Recorder().endpoints())
    with pytest.raises(TypeError, match="note"):
        bus.client.cast(topic, "note", {"when": object()})
    with pytest.raises(TypeError, match="add"):
        bus.client.call(topic, "add", {"a": {1, 2}, "b": 1}, timeout=10)
    with pytest.raises(ValueError, match="note"):
        bus.client.cast(topic, "note", {"x": float("nan")})
    with pytest.raises(ValueError, match="timeout"):
        bus.client.call(topic, "ping", {}, timeout=0)


def test_declare_and_delete_are_idempotent(bus: Bus, topic: str) -> None:
    bus.client.delete_topic(topic)  # never declared
    bus.client.declare_topic(topic)
    bus.client.declare_topic(topic)
    bus.client.delete_topic(topic)
    bus.client.delete_topic(topic)
    with pytest.raises(ValueError):
        bus.client.declare_topic("")


def test_a_declared_topic_keeps_casts_until_its_server_comes(bus: Bus, topic: str) -> None:
    recorder = Recorder()
    bus.client.declare_topic(topic)
    bus.client.cast(topic, "note", {"n": 1})
    bus.client.cast(topic, "note", {"n": 2})
    bus.serve(topic, recorder.endpoints())
    wait_for(lambda: len(recorder.got("note")) == 2, what="for the kept casts")
    assert recorder.got("note") == [{"n": 1}, {"n": 2}]


def test_a_deleted_topic_drops_what_it_kept_and_what_comes_after(bus: Bus, topic: str) -> None:
    recorder = Recorder()
    bus.client.declare_topic(topic)
    bus.client.cast(topic, "note", {"kept": False})
    bus.client.delete_topic(topic)
    bus.client.cast(topic, "note", {"queued": False})  # no queue: dropped
    bus.serve(topic, recorder.endpoints())
    # One worker takes requests in order: once the call is answered, any cast before it ran.
    assert bus.client.call(topic, "ping", {}, timeout=10) == "pong"
    assert recorder.got("note") == []


def test_a_closed_client_can_be_used_again(bus: Bus, topic: str) -> None:
    bus.serve(topic, Recorder().endpoints())
    assert bus.client.call(topic, "ping", {}, timeout=10) == "pong"
    bus.client.close()
    assert bus.client.call(topic, "ping", {}, timeout=10) == "pong"


# -- the compute driver ---------------------------------------------------------------------------


class Place:
    """A compute driver under test, and how to look at an instance's place beside it."""

    def __init__(
        self,
        driver: ComputeDriver,
        kill_agent: Callable[[str], None],
        leftovers: Callable[[str], list[str]],
        agents: Callable[[str], int],
    ) -> None:
        self.driver = driver
        #: Kill the instance's agent as a crash would, and return once the driver can tell.
        self.kill_agent = kill_agent
        #: What is left of the instance: files, processes, records.
        self.leftovers = leftovers
        #: How many guest agents the instance has.
        self.agents = agents
        self.created: list[str] = []

    def spec(self, **changes: Any) -> GuestSettings:
        spec = GuestSettings(
            instance_id=new_id(),
            datastore="postgresql",
            datastore_version="15",
            bin_dir="/nonexistent",  # no database server is ever started
            address="127.42.250.9",
            port=5432,
            ram_mb=256,
            vcpus=1,
            volume_gb=1,
            transport_url="redis://127.0.0.1:1",  # nobody listens: the agent keeps trying
            heartbeat_interval=5,
        )
        return dataclasses.replace(spec, **changes)

    def create(self, spec: GuestSettings) -> None:
        self.created.append(spec.instance_id)
        self.driver.create(spec)


def _fake_place() -> Place:
    driver = FakeDriver()

    def leftovers(instance_id: str) -> list[str]:
        return [
            f"{name} record"
            for name in ("settings", "states")
            if instance_id in getattr(driver, name)
        ]

    return Place(
        driver,
        driver.stop_agent,
        leftovers,
        lambda iid: 1 if driver.states.get(iid) is ComputeState.ACTIVE else 0,
    )


def _local_place(base: Path) -> Place:
    # check=True: the driver first makes sure the service user can run the guest agent.
    driver = LocalDriver(load_settings(data_dir=base / "d"), check=True)

    def agent_pids(instance_id: str) -> list[int]:
        config = str(driver.config_path(instance_id))
        return procfs.processes_with_arg(driver.owner(instance_id).uid, config)

    def kill_agent(instance_id: str) -> None:
        wait_for(lambda: driver.agent_pid(instance_id) is not None, what="for the agent's lock")
        pid = driver.agent_pid(instance_id)
        assert pid is not None and pid > 0
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: driver.state(instance_id) is not ComputeState.ACTIVE, what="for death")

    def leftovers(instance_id: str) -> list[str]:
        left = [f"pid {pid}" for pid in agent_pids(instance_id)]
        if os.path.lexists(driver.instance_dir(instance_id)):
            left.append(str(driver.instance_dir(instance_id)))
        return left

    def agents(instance_id: str) -> int:
        # Once the agent holds its lock, a second one would have been started by now.
        wait_for(lambda: driver.agent_pid(instance_id) is not None, what="for the agent's lock")
        return len(agent_pids(instance_id))

    return Place(driver, kill_agent, leftovers, agents)


@pytest.fixture(params=["fake", "local"])
def place(request: pytest.FixtureRequest) -> Iterator[Place]:
    if request.param == "fake":
        yield _fake_place()
        return
    # pytest's own temporary directories are 0700: the service user could not enter them.
    base = Path(tempfile.mkdtemp(prefix="cove-contract-"))
    base.chmod(0o755)
    p: Place | None = None
    try:
        p = _local_place(base)
        yield p
    finally:
        if p is not None:
            for instance_id in p.created:
                with contextlib.suppress(Exception):
                    p.driver.destroy(instance_id)
            p.driver.close()
        remove_tree(base)


def unplaced(settings: GuestSettings | None) -> GuestSettings | None:
    """``settings`` without where the driver placed the instance (which drivers fill in)."""
    if settings is None:
        return None
    return dataclasses.replace(settings, instance_dir="", template_dir=None, journal_dir="")


def test_create_leaves_the_agent_running(place: Place) -> None:
    spec = place.spec()
    place.create(spec)
    assert place.driver.state(spec.instance_id) is ComputeState.ACTIVE
    assert place.driver.ensure_running(spec.instance_id) is False
    assert place.agents(spec.instance_id) == 1


def test_create_is_idempotent(place: Place) -> None:
    spec = place.spec()
    place.create(spec)
    again = dataclasses.replace(spec, ram_mb=512)
    place.create(again)
    assert place.driver.state(spec.instance_id) is ComputeState.ACTIVE
    assert place.agents(spec.instance_id) == 1
    # The second create wrote its settings.
    assert unplaced(place.driver.update(spec)) == again


def test_update_returns_the_settings_it_replaced(place: Place) -> None:
    spec = place.spec()
    place.create(spec)
    bigger = dataclasses.replace(spec, ram_mb=1024, volume_gb=3, overrides={"work_mem": 4096})
    assert unplaced(place.driver.update(bigger)) == spec
    assert unplaced(place.driver.update(spec)) == bigger
    # Updating starts and restarts nothing.
    assert place.driver.state(spec.instance_id) is ComputeState.ACTIVE
    assert place.agents(spec.instance_id) == 1


def test_an_instance_never_placed(place: Place) -> None:
    spec = place.spec()
    assert place.driver.state(spec.instance_id) is ComputeState.ERROR
    with pytest.raises(ConfigurationError):
        place.driver.update(spec)
    with pytest.raises(ConfigurationError):
        place.driver.ensure_running(spec.instance_id)
    place.driver.destroy(spec.instance_id)  # nothing to do, and no error
    assert place.leftovers(spec.instance_id) == []


def test_state_follows_the_agent_and_ensure_running_brings_it_back(place: Place) -> None:
    spec = place.spec()
    place.create(spec)
    place.kill_agent(spec.instance_id)
    assert place.driver.state(spec.instance_id) is ComputeState.SHUTDOWN
    assert place.driver.ensure_running(spec.instance_id) is True
    assert place.driver.state(spec.instance_id) is ComputeState.ACTIVE
    assert place.driver.ensure_running(spec.instance_id) is False
    assert place.agents(spec.instance_id) == 1


def test_destroy_leaves_nothing_and_is_idempotent(place: Place) -> None:
    spec = place.spec()
    place.create(spec)
    place.driver.destroy(spec.instance_id)
    assert place.leftovers(spec.instance_id) == []
    assert place.driver.state(spec.instance_id) is ComputeState.ERROR
    place.driver.destroy(spec.instance_id)
    with pytest.raises(ConfigurationError):
        place.driver.update(spec)
    with pytest.raises(ConfigurationError):
        place.driver.ensure_running(spec.instance_id)
    # The same id can be placed again from nothing.
    place.create(spec)
    assert place.driver.state(spec.instance_id) is ComputeState.ACTIVE
    assert unplaced(place.driver.update(spec)) == spec
