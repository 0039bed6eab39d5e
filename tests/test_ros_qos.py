"""QoS of the node's topics from a profile name and a depth, and its Cyclone DDS form."""

import pytest
from cyclonedds.core import Policy

from vts_drive.errors import InputError
from vts_drive.ros.dds_transport import dds_qos
from vts_drive.ros.qos import QosSpec, qos_spec


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


def test_the_node_reads_cameras_by_its_qos_parameter_and_publishes_reliably():
    from vts_drive.ros.params import NodeParams
    from vts_drive.ros.qos import input_qos, output_qos

    assert input_qos(NodeParams(qos="reliable")) == QosSpec(reliable=True, depth=10)
    assert input_qos(NodeParams()) == QosSpec(reliable=False, depth=5)
    assert output_qos(NodeParams()) == QosSpec(reliable=True, depth=10)
