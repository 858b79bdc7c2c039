"""The population kinds (ir/kinds.py): each stated once, named in program.h5, run by Lava."""

from __future__ import annotations

import copy
import pickle

import pytest

from danet_deploy.errors import UserError
from danet_deploy.ir.kinds import KINDS, LIF, READOUT, RELAY, kind_named
from danet_deploy.simulator.lava import LAVA_PROCESSES


def test_every_kind_reads_back_by_its_name_and_stays_the_one_instance() -> None:
    for name, kind in KINDS.items():
        assert kind.name == name and kind_named(name) is kind
        assert copy.deepcopy(kind) is kind and pickle.loads(pickle.dumps(kind)) is kind


def test_every_kind_has_one_lava_entry() -> None:
    assert set(LAVA_PROCESSES) == set(KINDS.values())


def test_an_unknown_kind_in_a_program_file_is_one_line() -> None:
    with pytest.raises(UserError, match="unknown population kind 'izhikevich'"):
        kind_named("izhikevich")


def test_the_kinds_answer_what_the_stages_ask() -> None:
    assert LIF.spiking and LIF.has_neurons and not LIF.graded
    assert RELAY.sends_current and RELAY.graded and not RELAY.spiking
    assert READOUT.is_readout and not READOUT.has_neurons
    assert [k.name for k in KINDS.values() if k.is_input] == ["input"]
    assert {k.name for k in KINDS.values() if k.sigma_delta} == {"delta", "sigma_delta"}
