"""QoS of the node's topics from a profile name and a depth, and its Cyclone DDS form."""

import pytest
from cyclonedds.core import Policy

from vts_drive.errors import InputError
from vts_drive.ros.dds_transport import dds_qos
from vts_drive.ros.params import NodeParams, params_from_dict
from vts_drive.ros.qos import QosSpec, input_qos, output_qos, qos_spec


@pytest.mark.parametrize(
    "profile, depth, expected",
    [
        ("sensor_data", 0, QosSpec(reliable=False, depth=5)),  # ROS's sensor-data profile keeps 5
        ("best_effort", 0, QosSpec(reliable=False, depth=5)),
        ("reliable", 0, QosSpec(reliable=True, depth=10)),  # ROS's default profile keeps 10
        ("sensor_data", 1, QosSpec(reliable=False, depth=1)),
        ("reliable", 50, QosSpec(reliable=True, depth=50)),
    ],
)
def test_profile_and_depth(profile, depth, expected):
    assert qos_spec(profile, depth) == expected


@pytest.mark.parametrize(
    "profile, depth, message",
    [
        ("fast", 0, "parameter input_qos: 'fast' is not one of sensor_data, best_effort, reliable"),
        ("reliable", -1, "parameter input_qos_depth: must be a whole number >= 0"),
        ("reliable", 2.5, "parameter input_qos_depth: must be a whole number >= 0"),
        ("reliable", True, "parameter input_qos_depth: must be a whole number >= 0"),
    ],
)
def test_bad_profiles_and_depths_name_the_parameter(profile, depth, message):
    with pytest.raises(InputError, match=message):
        qos_spec(profile, depth, parameter="input_qos")


def test_dds_qos_sets_reliability_history_and_volatile_durability():
    best_effort = dds_qos(QosSpec(reliable=False, depth=3))
    assert best_effort[Policy.Reliability] == Policy.Reliability.BestEffort
    assert best_effort[Policy.History] == Policy.History.KeepLast(3)
    assert best_effort[Policy.Durability] == Policy.Durability.Volatile
    reliable = dds_qos(QosSpec(reliable=True, depth=10))
    assert isinstance(reliable[Policy.Reliability], Policy.Reliability.Reliable)
    assert reliable[Policy.History] == Policy.History.KeepLast(10)


def test_by_default_the_node_reads_cameras_best_effort_and_publishes_reliably():
    assert input_qos(NodeParams()) == QosSpec(reliable=False, depth=5)
    assert output_qos(NodeParams()) == QosSpec(reliable=True, depth=10)


@pytest.mark.parametrize(
    "values, inputs, outputs",
    [
        ({"input_qos": "reliable"}, QosSpec(reliable=True, depth=10), QosSpec(reliable=True, depth=10)),
        ({"input_qos_depth": 1}, QosSpec(reliable=False, depth=1), QosSpec(reliable=True, depth=10)),
        ({"output_qos": "best_effort"}, QosSpec(reliable=False, depth=5), QosSpec(reliable=False, depth=5)),
        (
            {
                "input_qos": "best_effort",
                "input_qos_depth": 3,
                "output_qos": "sensor_data",
                "output_qos_depth": 20,
            },
            QosSpec(reliable=False, depth=3),
            QosSpec(reliable=False, depth=20),
        ),
        (
            {"output_qos": "reliable", "output_qos_depth": 0},
            QosSpec(reliable=False, depth=5),
            QosSpec(reliable=True, depth=10),
        ),
    ],
)
def test_profile_and_depth_parameters_reach_the_inputs_and_outputs_qos(values, inputs, outputs):
    params = params_from_dict(values)
    assert (input_qos(params), output_qos(params)) == (inputs, outputs)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"input_qos": "best-effort"}, "parameter input_qos: 'best-effort' is not one of"),
        ({"output_qos": "fast"}, "parameter output_qos: 'fast' is not one of"),
        ({"input_qos_depth": -1}, "parameter input_qos_depth: must be a whole number >= 0"),
        ({"output_qos_depth": -1}, "parameter output_qos_depth: must be a whole number >= 0"),
    ],
)
def test_bad_qos_parameters_are_refused_naming_them(values, message):
    with pytest.raises(InputError, match=message):
        params_from_dict(values)
    with pytest.raises(InputError, match=message):  # a NodeParams built in code is checked alike
        NodeParams(**values).check()
