"""Kafka admin clients moving a partition between Spate's nodes (docs/cluster.md, "Moving
partitions"), through the Kafka listener of a `spate up --nodes 3` cluster: kafka-python
3.0.12 reassigns a one-replica partition to the two other nodes
(AlterPartitionReassignments), watches it (ListPartitionReassignments) until done, and
cancelling a partition that is not moving is refused (NO_REASSIGNMENT_IN_PROGRESS);
confluent-kafka 2.16.1 elects the preferred leader (ElectLeaders), which then needs no
election (ELECTION_NOT_NEEDED), and reads every record written before the move. Exits
non-zero on the first broken expectation. Usage: moves.py BROKER TOPIC"""
import sys
import time

from confluent_kafka import Consumer, ElectionType, Producer, TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, TopicPartition

from cluster_tools import placement_of, wait

broker, topic = sys.argv[1], sys.argv[2]
ck = AdminClient({"bootstrap.servers": broker})
admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=20000)


def placement():
    """(leader, replicas, isr) of partition 0, as Kafka Metadata says."""
    return placement_of(ck, topic)


created = ck.create_topics([NewTopic(topic, 1, replication_factor=1)])
created[topic].result(20)
records = [f"record {n}".encode() for n in range(200)]
producer = Producer({"bootstrap.servers": broker, "acks": "all", "enable.idempotence": True})
for value in records:
    producer.produce(topic, value=value, partition=0)
assert producer.flush(30) == 0
home = wait("a leader", lambda: placement()[0] if placement()[0] >= 0 else None)
assert placement()[1] == [home], placement()
others = sorted({1, 2, 3} - {home})

# Nothing moves yet; a cancellation of a partition not moving is refused.
assert admin.list_partition_reassignments() == {}, admin.list_partition_reassignments()
cancelled = admin.alter_partition_reassignments({TopicPartition(topic, 0): None})
assert cancelled[TopicPartition(topic, 0)].__name__ == "NoReassignmentInProgressError", cancelled

# Reassigned to the two other nodes: listed while it moves, then done.
moved = admin.alter_partition_reassignments({TopicPartition(topic, 0): others})
assert moved[TopicPartition(topic, 0)] is None, moved
seen = admin.list_partition_reassignments()
if seen:
    ongoing = seen[TopicPartition(topic, 0)]
    assert sorted(ongoing["adding_replicas"]) == others, seen
    assert ongoing["removing_replicas"] == [home], seen
wait("the reassignment done", lambda: admin.list_partition_reassignments() == {})
leader, replicas, isr = wait("the new replicas in sync",
                             lambda: placement() if sorted(placement()[2]) == others else None)
assert replicas == others and leader in others, (leader, replicas, isr)

# The preferred replica (the first) leads after an election; then none is needed.
def elect():
    """confluent-kafka's preferred election of partition 0: its error's name, or None."""
    outcome = ck.elect_leaders(ElectionType.PREFERRED, [CkTopicPartition(topic, 0)]).result(20)
    errors = [error for partition, error in outcome.items()
              if partition.topic == topic and partition.partition == 0]
    assert len(errors) == 1, outcome
    return None if errors[0] is None else errors[0].name()


error = elect()
if leader == others[0]:
    assert error == "ELECTION_NOT_NEEDED", error
else:
    assert error is None, error
wait("the preferred leader", lambda: placement()[0] == others[0])
assert elect() == "ELECTION_NOT_NEEDED"
# kafka-python asks too (the whole answer; a partition's error raises by default).
answer = admin.elect_leaders(0, {topic: [0]}, raise_errors=False)
assert answer.replica_election_results[0][1][0][1] == 84, answer  # ELECTION_NOT_NEEDED

# Every record written before the move, from its new leader.
consumer = Consumer({"bootstrap.servers": broker, "group.id": topic + "-reader",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
consumer.assign([CkTopicPartition(topic, 0, 0)])
read = []
deadline = time.time() + 30
while len(read) < len(records) and time.time() < deadline:
    message = consumer.poll(1)
    if message is not None and message.error() is None:
        read.append(message.value())
consumer.close()
assert read == records, (len(read), read[:3])
print("moves ok", home, "->", others)
