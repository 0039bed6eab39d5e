"""The node on plain DDS (Cyclone DDS), speaking the ROS 2 wire format without a ROS 2 install.

Topics, types and QoS are what rmw_cyclonedds uses, so ROS 2 nodes on the same
domain see this node as one of their own: cameras are read and outputs
written with the QoS of the input_qos and output_qos parameters (by default
best-effort keep-last 5, ROS's sensor_data profile, and reliable keep-last 10,
ROS's default profile); qos.py names them. Questions
are read reliable, keep-all: a burst is held back by the writer rather than
overwritten, so every question reaches the node, which answers or rejects
each one. ~/overlay is drawn only while a reader is matched to its writer.

Samples are taken one at a time, so one that does not deserialize (a string
that is not UTF-8) is counted and dropped alone and the others go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from functools import partial

from cyclonedds.core import (
    DDSException,
    InstanceState,
    Policy,
    Qos,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import DomainParticipant
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from vts_drive.errors import InputError
from vts_drive.ros import RosMessage
from vts_drive.ros.detections import to_detection_array
from vts_drive.ros.diagnostics import Status, to_diagnostic_array
from vts_drive.ros.msgs import (
    DDS_DETECTION_TYPES,
    DDS_DIAGNOSTIC_TYPES,
    CompressedImage_,
    Detection2DArray_,
    DiagnosticArray_,
    Image_,
    String_,
    dds_topic,
    image_message,
)
from vts_drive.ros.node_core import NodeCore, Outputs
from vts_drive.ros.params import NODE_NAME, NodeParams, output_topic
from vts_drive.ros.qos import QosSpec, input_qos, output_qos, qos_spec

RELIABLE_BLOCKING = duration(milliseconds=100)  # longest a reliable write waits for a slow reader


def dds_qos(spec: QosSpec) -> Qos:
    """The Cyclone DDS QoS of a QosSpec, as rmw_cyclonedds sets it for the same ROS profile."""
    reliability = (
        Policy.Reliability.Reliable(max_blocking_time=RELIABLE_BLOCKING)
        if spec.reliable
        else Policy.Reliability.BestEffort
    )
    return Qos(reliability, Policy.History.KeepLast(spec.depth), Policy.Durability.Volatile)


SENSOR_DATA_QOS = dds_qos(qos_spec("sensor_data"))
RELIABLE_QOS = dds_qos(qos_spec("reliable"))
QUESTION_QOS = Qos(
    Policy.Reliability.Reliable(max_blocking_time=RELIABLE_BLOCKING),
    Policy.History.KeepAll,
    Policy.ResourceLimits(max_samples=64),  # beyond it the writer waits (reliable), nothing is lost
    Policy.Durability.Volatile,
)
TAKE_BATCH = 16  # samples taken per reader per wake-up

log = logging.getLogger("vts_drive.node")


class DdsTransport:
    """A DDS participant with the node's readers and writers; `spin` feeds a NodeCore until stopped."""

    def __init__(self, params: NodeParams, domain_id: int = 0, node_name: str = NODE_NAME) -> None:
        try:
            self.participant = DomainParticipant(domain_id)
        except DDSException as error:
            raise InputError(
                f"DDS domain {domain_id}: cannot join ({error}); check --domain-id (0-232) and CYCLONEDDS_URI"
            ) from None
        image_type = CompressedImage_ if params.compressed else Image_
        camera_qos = dds_qos(input_qos(params))
        self.cameras = [
            (camera, self._reader(topic, image_type, camera_qos))
            for camera, topic in zip(params.cameras, params.subscribed_topics)
        ]
        self.questions = self._reader(output_topic("question", node_name), String_, QUESTION_QOS)
        self._output_qos = dds_qos(output_qos(params))
        self._description = self._writer(output_topic("scene_description", node_name), String_)
        self._report = self._writer(output_topic("risk_qa", node_name), String_)
        self._answer = self._writer(output_topic("answer", node_name), String_)
        self._detections = self._writer(output_topic("risk_detections", node_name), Detection2DArray_)
        self._overlay = self._writer(output_topic("overlay", node_name), Image_)
        self._diagnostics = self._writer("/diagnostics", DiagnosticArray_)
        self.waitset = WaitSet(self.participant)
        self._conditions = []
        for reader in [reader for _, reader in self.cameras] + [self.questions]:
            condition = ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
            self.waitset.attach(condition)
            self._conditions.append(condition)

    def _topic(self, ros_topic: str, data_type: type) -> Topic:
        return Topic(self.participant, dds_topic(ros_topic), data_type)

    def _reader(self, ros_topic: str, data_type: type, qos: Qos) -> DataReader:
        return DataReader(self.participant, self._topic(ros_topic, data_type), qos=qos)

    def _writer(self, ros_topic: str, data_type: type) -> DataWriter:
        return DataWriter(self.participant, self._topic(ros_topic, data_type), qos=self._output_qos)

    def outputs(self, clock_ns) -> Outputs:
        """Publishing functions for NodeCore; clock_ns stamps /diagnostics (wall time)."""

        def diagnostics(statuses: list[Status]) -> None:
            self._diagnostics.write(to_diagnostic_array(statuses, clock_ns(), DDS_DIAGNOSTIC_TYPES))

        return Outputs(
            description=lambda text: self._description.write(String_(data=text)),
            report=lambda text: self._report.write(String_(data=text)),
            answer=lambda text: self._answer.write(String_(data=text)),
            diagnostics=diagnostics,
            detections=lambda detection: self._detections.write(
                to_detection_array(detection, DDS_DETECTION_TYPES)
            ),
            overlay=lambda rgb, detection: self._overlay.write(
                image_message(detection.stamp_ns, detection.frame_id, rgb)
            ),
            overlay_wanted=lambda: self._overlay.get_publication_matched_status().current_count > 0,
        )

    def spin(self, core: NodeCore, stop: threading.Event) -> None:
        """Hand every received sample to the core until `stop` is set (checked every 100 ms)."""
        while not stop.is_set():
            self.waitset.wait(duration(milliseconds=100))
            for camera, reader in self.cameras:
                for msg in _take(reader, partial(core.on_bad_image, camera)):
                    core.on_message(camera, msg)
            for msg in _take(self.questions, core.on_bad_question):
                core.on_question(msg.data)

    def close(self) -> None:
        """Leave the domain now rather than at garbage collection: deleting the participant
        deletes its readers, writers and waitset (cyclonedds has no public close)."""
        for condition in self._conditions:
            self.waitset.detach(condition)
        self.participant.__del__()


def _take(reader: DataReader, on_bad: Callable[[Exception], None]) -> Iterator[RosMessage]:
    """Up to TAKE_BATCH data samples, taken one at a time: cyclonedds deserializes a whole take at
    once, so one sample that does not deserialize would lose the others taken with it. A writer
    leaving the domain shows up as an InvalidSample (no data) and is skipped."""
    for _ in range(TAKE_BATCH):
        try:
            samples = reader.take(N=1)
        except DDSException as error:  # the reader itself failed, not a sample: try again on the next wake-up
            log.warning("taking from %s failed: %s", reader.topic.name, error)
            return
        except Exception as error:  # the sample was taken, but its bytes do not deserialize
            on_bad(error)
            continue
        if not samples:
            return
        if not isinstance(samples[0], InvalidSample):
            yield samples[0]
