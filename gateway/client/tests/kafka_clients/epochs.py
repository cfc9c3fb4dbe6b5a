"""Kafka's leader epochs (KIP-320) through the Kafka listener of a `spate up --nodes 3`
cluster, with confluent-kafka 2.16.1 (librdkafka 2.16): the records a consumer reads carry
their leader's epoch; the partition's leadership moves (a reassignment away from its leader,
kafka-python 3.0.12) while the consumer reads on, and it reads every record once, in order,
the later ones in a higher epoch; a seek to an offset past the end of the epoch it names is
found out by the client's OffsetForLeaderEpoch (truncation detected) and the consumer goes on
from where that epoch ended; a seek within the current epoch is kept. Exits non-zero on the
first broken expectation. Usage: epochs.py BROKER TOPIC"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, TopicPartition as KpTopicPartition

from cluster_tools import placement_of, wait

broker, topic = sys.argv[1], sys.argv[2]
ck = AdminClient({"bootstrap.servers": broker})
admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=20000)


def placement():
    """(leader, replicas, isr) of partition 0, as Kafka Metadata says."""
    return placement_of(ck, topic)


def produce(values):
    producer = Producer({"bootstrap.servers": broker, "acks": "all",
                         "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(30) == 0


def read(consumer, count, seconds=30):
    """The next `count` records: (offset, leader epoch, value) each."""
    got = []
    deadline = time.time() + seconds
    while len(got) < count:
        assert time.time() < deadline, f"{len(got)} of {count} records read: {got[-3:]}"
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        got.append((message.offset(), message.leader_epoch(), message.value()))
    return got


ck.create_topics([NewTopic(topic, 1, replication_factor=3)])[topic].result(20)
first = [f"first {n}".encode() for n in range(50)]
produce(first)
leader = wait("a leader", lambda: placement()[0] if placement()[0] >= 0 else None)
wait("three replicas in sync", lambda: len(placement()[2]) == 3)

consumer = Consumer({"bootstrap.servers": broker, "group.id": topic + "-reader",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "topic.metadata.refresh.interval.ms": 500})
consumer.assign([TopicPartition(topic, 0, 0)])
before = read(consumer, 50)
assert [value for _, _, value in before] == first, before[:3]
epochs = {epoch for _, epoch, _ in before}
assert len(epochs) == 1, epochs
(epoch_before,) = epochs
assert epoch_before is not None and epoch_before >= 1, epoch_before

# The leader leaves the partition: another replica leads a higher epoch.
others = sorted({1, 2, 3} - {leader})
moved = admin.alter_partition_reassignments({KpTopicPartition(topic, 0): others})
assert moved[KpTopicPartition(topic, 0)] is None, moved
wait("the reassignment done", lambda: admin.list_partition_reassignments() == {})
wait("a new leader", lambda: placement()[0] in others and placement()[1] == others)
# The consumer polls on while its client learns of the new leader (and its epoch) and
# validates its position with OffsetForLeaderEpoch: nothing to read, nothing reset.
deadline = time.time() + 3
while time.time() < deadline:
    message = consumer.poll(0.2)
    assert message is None or message.error() is not None, (message.offset(), message.value())
second = [f"second {n}".encode() for n in range(50)]
produce(second)
after = read(consumer, 50)
assert [(offset, value) for offset, _, value in after] == list(enumerate(second, 50)), after[:3]
epochs = {epoch for _, epoch, _ in after}
assert len(epochs) == 1, epochs
(epoch_after,) = epochs
assert epoch_after > epoch_before, (epoch_before, epoch_after)

# A position in the current epoch, below the log end: kept (the next record is there).
consumer.seek(TopicPartition(topic, 0, 70, leader_epoch=epoch_after))
(offset, epoch, value), = read(consumer, 1)
assert (offset, value) == (70, b"second 20"), (offset, value)
# A position past where its epoch ended (as after a truncation): the client's
# OffsetForLeaderEpoch says the old epoch ended at 50, and the consumer goes on from there.
consumer.seek(TopicPartition(topic, 0, 80, leader_epoch=epoch_before))
(offset, epoch, value), = read(consumer, 1)
assert (offset, epoch, value) == (50, epoch_after, b"second 0"), (offset, epoch, value)
consumer.close()
print("epochs ok", epoch_before, "->", epoch_after)
