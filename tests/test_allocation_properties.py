"""Property tests: random allocate/release/restore sequences against a model.

Each example builds a small block (IPv4 /28../30 or IPv6 /120../126, with or
without a gateway, with a random policy of unusable ranges and octets) in a
fresh store, runs a random sequence of operations, and after every step checks
the store against the reference model (tests/support/allocation_model.py):

- no address is ever active twice, and nothing forbidden is ever handed out
  (network/broadcast of IPv4 below /31, the gateway, policy ranges and octets,
  the IPv6 subnet-router anycast address below /127);
- every operation succeeds or fails exactly as the model says, with the
  contract's exit code, and an allocation hands out the lowest free addresses;
- `ip list` and `ip list --released` agree with the model, and so do the
  block's utilisation counts (used, held, free, unusable).

"Expire" steps age a hold past the release time directly in the SQLite file
(as if the hold time had passed): the contract says an expired hold never
blocks an allocation, whether or not a cleanup has run.

Most examples go through the core API (operations.run) for speed; a smaller
number go through the CLI.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from melange import operations
from melange.errors import MelangeError
from melange.store import Store
from tests.support.allocation_model import Block, Model, forbidden
from tests.support.scratch_stores import age_hold, empty_store_file

BLOCK = "blk"
POLICY = "pol"
MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03")
HOLD = 3600
V4_BASE = int(ipaddress.IPv4Address("10.20.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8:0:7::"))


# -- the block under test (the rules it must keep: tests/support/allocation_model.py)


@st.composite
def setups(draw) -> Block:
    version = draw(st.sampled_from([4, 6]))
    if version == 4:
        prefixlen = draw(st.integers(28, 30))
        size = 2 ** (32 - prefixlen)
        first = V4_BASE + draw(st.integers(0, 2**10 - 1)) * size
        gateway = draw(st.none() | st.integers(1, size - 2))
    else:
        prefixlen = draw(st.integers(120, 126))
        size = 2 ** (128 - prefixlen)
        first = V6_BASE + draw(st.integers(0, 2**10 - 1)) * size
        gateway = draw(st.none() | st.integers(0, size - 1))
    ranges = draw(
        st.lists(
            st.tuples(st.integers(-size - 2, size + 2), st.integers(1, 4)),
            max_size=3,
            unique=True,
        )
    )
    own_octets = sorted({(first + i) & 0xFF for i in range(size)})
    octets = draw(
        st.lists(st.sampled_from(own_octets) | st.integers(0, 255), max_size=3, unique=True)
    )
    with_policy = draw(st.booleans()) or bool(ranges or octets)
    return Block(version, prefixlen, first, gateway, tuple(ranges), tuple(octets), with_policy)


# -- operations: plain tuples so hypothesis prints and shrinks them readably


def operations_for(size: int):
    # An index of `size` stands for an address just past the block's end.
    index = st.integers(0, size)
    mac = st.none() | st.integers(0, len(MACS) - 1)
    allocate = st.one_of(
        st.tuples(st.just("allocate"), mac, st.none(), st.none()),
        st.tuples(st.just("allocate"), mac, index, st.none()),
        st.tuples(st.just("allocate"), st.none(), st.none(), st.integers(1, 5)),
        # --count 0, or --count with --mac/--address: usage errors
        st.tuples(st.just("allocate"), mac, st.none() | index, st.integers(0, 5)),
    )
    which = st.integers(0, 63)
    among = st.sampled_from(["live", "live", "held", "any"])
    now = st.sampled_from([False, False, True])
    release = st.tuples(st.just("release"), st.tuples(which, among), now)
    restore = st.tuples(
        st.just("restore"), st.tuples(which, st.sampled_from(["held", "held", "held", "any"]))
    )
    expire = st.tuples(st.just("expire"), which)
    return st.one_of(allocate, allocate, release, release, restore, expire)


@st.composite
def scenarios(draw, max_ops: int = 20):
    setup = draw(setups())
    ops = draw(st.lists(operations_for(setup.size), min_size=max_ops // 3, max_size=max_ops))
    return setup, ops


# -- which address a step acts on, and what the model says `ip list` shows


def pick(model: Model, which: int, among: str) -> int:
    """An address to act on: one held, one live (allocated or held), or any at all."""
    held = sorted(model.held)
    live = sorted(model.allocated.keys() | model.held.keys())
    for candidates in [held, live] if among == "held" else [live] if among == "live" else []:
        if candidates:
            return candidates[which % len(candidates)]
    return which % model.block.size


def listing(model: Model, released: bool) -> list[tuple[str, str | None, str]]:
    rows = model.held if released else model.allocated
    state = "held" if released else "allocated"
    return [
        (model.block.text(i), None if m is None else MACS[m], state)
        for i, m in sorted(rows.items())
    ]


# -- drivers: the same steps through the core API or the CLI


class CoreDriver:
    def __init__(self, directory: Path) -> None:
        self.db = empty_store_file(directory)
        self.store = Store(f"sqlite:///{self.db}", release_hold=HOLD)

    def close(self) -> None:
        self.store.close()

    def call(self, operation: str, **params):
        try:
            return 0, operations.run(self.store, operation, params)
        except MelangeError as error:
            return error.exit_code, None

    def setup_block(self, setup: Block) -> None:
        if setup.with_policy:
            assert self.call("policy.create", name=POLICY)[0] == 0
            for offset, length in setup.ranges:
                assert (
                    self.call("policy.add_range", name=POLICY, offset=offset, length=length)[0] == 0
                )
            for octet in setup.octets:
                assert self.call("policy.add_octet", name=POLICY, octet=octet)[0] == 0
        code, _ = self.call(
            "block.create",
            cidr=setup.cidr,
            name=BLOCK,
            gateway=None if setup.gateway is None else setup.text(setup.gateway),
            policy=POLICY if setup.with_policy else None,
        )
        assert code == 0

    def allocate(self, mac: str | None, address: str | None, count: int | None):
        code, records = self.call(
            "block.allocate", block=BLOCK, mac=mac, address=address, count=count
        )
        return code, None if records is None else [r["address"] for r in records]

    def release(self, address: str, now: bool) -> int:
        return self.call("ip.release", address=address, block=BLOCK, now=now)[0]

    def restore(self, address: str) -> int:
        return self.call("ip.restore", address=address, block=BLOCK)[0]

    def listing(self, released: bool):
        code, records = self.call("ip.list", block=BLOCK, released=released)
        assert code == 0
        return records

    def utilization(self) -> dict:
        code, record = self.call("block.show", block=BLOCK)
        assert code == 0
        return record["utilization"]


class CliDriver:
    def __init__(self, melange) -> None:
        self.melange = melange
        self.db = melange.db

    def close(self) -> None:
        pass

    def _check_error(self, result) -> None:
        if result.exit_code != 0:
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
            assert result.stdout == ""

    def setup_block(self, setup: Block) -> None:
        if setup.with_policy:
            self.melange.ok("policy", "create", POLICY)
            for offset, length in setup.ranges:
                self.melange.ok(
                    "policy", "add-range", POLICY, f"--offset={offset}", f"--length={length}"
                )
            for octet in setup.octets:
                self.melange.ok("policy", "add-octet", POLICY, str(octet))
        args = ["block", "create", setup.cidr, "--name", BLOCK]
        if setup.gateway is not None:
            args += ["--gateway", setup.text(setup.gateway)]
        if setup.with_policy:
            args += ["--policy", POLICY]
        self.melange.ok(*args)

    def allocate(self, mac: str | None, address: str | None, count: int | None):
        args = ["block", "allocate", BLOCK]
        if mac is not None:
            args += ["--mac", mac]
        if address is not None:
            args += ["--address", address]
        if count is not None:
            args += ["--count", str(count)]
        result = self.melange(*args)  # plain: the address(es) alone, one a line
        self._check_error(result)
        if result.exit_code != 0:
            return result.exit_code, None
        return 0, result.stdout.splitlines()

    def release(self, address: str, now: bool) -> int:
        result = self.melange("ip", "release", address, "--block", BLOCK, *(["--now"] * now))
        self._check_error(result)
        return result.exit_code

    def restore(self, address: str) -> int:
        result = self.melange("ip", "restore", address, "--block", BLOCK)
        self._check_error(result)
        return result.exit_code

    def listing(self, released: bool):
        args = ["ip", "list", "--block", BLOCK, *(["--released"] * released)]
        return self.melange.json(*args)

    def utilization(self) -> dict:
        return self.melange.json("block", "show", BLOCK)["utilization"]


# -- the property


def check_store(driver, model: Model) -> None:
    forbidden_texts = {model.block.text(i) for i in model.forbidden}
    active = driver.listing(released=False)
    held = driver.listing(released=True)
    addresses = [r["address"] for r in active + held]
    assert len(addresses) == len(set(addresses)), f"an address is listed twice: {addresses}"
    handed_out_forbidden = set(addresses) & forbidden_texts
    assert not handed_out_forbidden, f"forbidden addresses handed out: {handed_out_forbidden}"
    macs = [r["mac"] for r in active if r["mac"] is not None]
    assert len(macs) == len(set(macs)), f"a MAC holds two active addresses: {active}"
    got_active = [(r["address"], r["mac"], r["state"]) for r in active]
    got_held = [(r["address"], r["mac"], r["state"]) for r in held]
    assert got_active == listing(model, released=False)
    assert got_held == listing(model, released=True)
    usage = driver.utilization()
    assert (usage["used"], usage["held"], usage["free"], usage["unusable"]) == (
        len(model.allocated),
        len(model.held),
        len(model.free()),
        len(model.forbidden),
    ), usage


def allocate_kind(mac, index, count) -> str:
    if count is not None:
        return "count"
    if index is not None:
        return "address"
    return "plain" if mac is None else "mac"


def run_scenario(driver, setup: Block, ops) -> None:
    model = Model(setup)
    driver.setup_block(setup)
    check_store(driver, model)
    for step, op in enumerate(ops):
        where = f"step {step}: {op}"
        kind = op[0]
        if kind == "allocate":
            _, mac, index, count = op
            mac_text = None if mac is None else MACS[mac]
            address = None if index is None else setup.text(index)
            want_code, want = model.allocate(mac, index, count)
            code, got = driver.allocate(mac_text, address, count)
            event(f"allocate {allocate_kind(mac, index, count)} -> {code}")
            assert code == want_code, where
            if want is not None:
                assert got == [setup.text(i) for i in want], where
        elif kind == "release":
            _, (which, among), now = op
            index = pick(model, which, among)
            want_code, _ = model.release(index, now)
            event(f"release now={now} -> {want_code}")
            assert driver.release(setup.text(index), now) == want_code, where
        elif kind == "restore":
            _, (which, among) = op
            index = pick(model, which, among)
            want_code, _ = model.restore(index)
            event(f"restore -> {want_code}")
            assert driver.restore(setup.text(index)) == want_code, where
        elif kind == "expire":
            _, which = op
            held = sorted(model.held)
            if held:
                index = held[which % len(held)]
                age_hold(driver.db, setup.first + index)
                assert model.expire(index)
                event("expire")
        check_store(driver, model)


@settings(max_examples=60, deadline=None)
@given(scenarios(max_ops=20))
def test_core_sequences_agree_with_model(scenario):
    setup, ops = scenario
    with tempfile.TemporaryDirectory(prefix="melange-prop-") as directory:
        driver = CoreDriver(Path(directory))
        try:
            run_scenario(driver, setup, ops)
        finally:
            driver.close()


@pytest.mark.sqlite_only  # a fresh SQLite file per example; holds are aged in the file
@pytest.mark.direct_only  # a fresh store file per example; the socket tests cover the daemon
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenarios(max_ops=12))
def test_cli_sequences_agree_with_model(melange, scenario):
    setup, ops = scenario
    with tempfile.TemporaryDirectory(prefix="melange-prop-cli-") as directory:
        # A fresh store per example, with the fixture's config and environment.
        driver = CliDriver(dataclasses.replace(melange, db=Path(directory) / "melange.db"))
        run_scenario(driver, setup, ops)


# -- a few fixed cases the model must get right, so the model itself is checked


def test_model_forbidden_examples():
    v4 = Block(4, 28, V4_BASE, 1, ((-2, 5), (3, 1)), (7,), True)
    assert forbidden(v4) == {0, 15, 1, 14, 3, 7}
    v6 = Block(6, 126, V6_BASE, None, (), (1, 2, 3), True)
    assert forbidden(v6) == {0}  # octet rules are IPv4-only


def test_lowest_free_is_handed_out_fixed_example(tmp_path):
    setup = Block(4, 29, V4_BASE, 2, ((-3, 1),), (), True)  # .0 net .2 gw .5 policy .7 bcast
    driver = CoreDriver(tmp_path)
    try:
        driver.setup_block(setup)
        assert driver.allocate(None, None, 3) == (0, [setup.text(i) for i in (1, 3, 4)])
        assert driver.allocate(None, None, 2) == (5, None)
        assert driver.allocate(None, None, None) == (0, [setup.text(6)])
        assert driver.allocate(None, None, None) == (5, None)
        assert driver.release(setup.text(3), now=False) == 0
        assert driver.allocate(None, None, None) == (5, None)  # held, not reusable
        assert driver.release(setup.text(4), now=True) == 0
        assert driver.allocate(None, None, None) == (0, [setup.text(4)])
    finally:
        driver.close()


def test_cli_json_allocate_count_is_an_array(melange):
    melange.ok("block", "create", "10.9.0.0/29", "--name", BLOCK)
    result = melange("block", "allocate", BLOCK, "--count", "2", output="json")
    assert result.exit_code == 0
    assert [r["address"] for r in json.loads(result.stdout)] == ["10.9.0.1", "10.9.0.2"]
