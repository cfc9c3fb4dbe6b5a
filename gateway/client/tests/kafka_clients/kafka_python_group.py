"""Consumer groups with kafka-python (3.0.12, pinned in e2e.rs): KafkaConsumers in one group
split a 4-partition topic and commit after each batch; a third joins (a rebalance); one is
killed with SIGKILL (its partitions move after its session times out); every record is
processed, and a record is processed twice only if the killed consumer had processed it after
its last commit (the at-least-once window: one batch per partition) or a consumer processed it
in a batch whose commit failed (a rebalance completed between its fetch and its commit). Then the committed
offsets equal the high watermarks, and KafkaAdminClient lists and describes the group (empty)
and deletes it.

Usage: python kafka_python_group.py BROKER TOPIC ASSIGNOR   (range, roundrobin or sticky)
       python kafka_python_group.py worker BROKER TOPIC GROUP ASSIGNOR OUTPUT
Exits non-zero on the first broken expectation.
"""
import os
import signal
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

import group_scenario

BATCH = 50
PARTITIONS = 4
ASSIGNORS = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
             "sticky": StickyPartitionAssignor}


def worker(broker, topic, group, assignor, output):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    consumer = KafkaConsumer(
        topic, bootstrap_servers=broker, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500,
        partition_assignment_strategy=[ASSIGNORS[assignor]])
    with open(output, "a", buffering=1) as out:
        while not stop:
            batches = consumer.poll(timeout_ms=500, max_records=BATCH)
            if not batches:
                continue
            for tp, records in batches.items():
                for r in records:
                    out.write("%d %d %s\n" % (tp.partition, r.offset, r.value.decode()))
            out.flush()
            os.fsync(out.fileno())
            try:
                consumer.commit()
            except Exception as error:  # a rebalance took the partitions: they are redone
                print("commit failed:", repr(error), file=sys.stderr, flush=True)
                group_scenario.uncommitted(
                    output, [r.value.decode() for records in batches.values() for r in records])
    consumer.close(autocommit=False)


def main(broker, topic, assignor):
    assert assignor in ASSIGNORS, assignor
    group = "group-" + topic
    admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=20000)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    sent = []

    def produce(count):
        futures = []
        for _ in range(count):
            value = "r%d" % len(sent)
            futures.append(producer.send(topic, value=value.encode(), partition=len(sent) % PARTITIONS))
            sent.append(value)
        producer.flush(30)
        for future in futures:
            future.get(timeout=0)

    duplicated = group_scenario.run(os.path.abspath(__file__), broker, topic, group, assignor,
                                    produce, sent, BATCH, PARTITIONS)

    # The commits are the high watermarks, seen by a consumer of the group and by the admin.
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    checker = KafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    ends = checker.end_offsets(partitions)
    assert sum(ends.values()) == len(sent), ends
    for tp in partitions:
        assert checker.committed(tp) == ends[tp], (tp, checker.committed(tp), ends[tp])
    checker.close(autocommit=False)
    offsets = admin.list_group_offsets({group: partitions})[group]
    assert {tp: o.offset for tp, o in offsets.items()} == ends, (offsets, ends)

    # The admin client sees the group, empty now, and deletes it.
    listed = admin.list_groups()
    assert group in [g["group_id"] for g in listed], listed
    described = admin.describe_groups([group])[group]
    assert described["error"] is None and described["group_state"] == "Empty", described
    assert described["members"] == [], described
    # An empty consumer group is still a consumer group (Kafka keeps the protocol type).
    assert described["protocol_type"] == "consumer", described
    assert admin.delete_groups([group]) == {group: "OK"}
    assert group not in [g["group_id"] for g in admin.list_groups()]
    offsets = admin.list_group_offsets({group: partitions})[group]
    assert all(o.offset < 0 for o in offsets.values()), offsets
    admin.close()
    print("kafka-python groups (%s) ok: %d records, %d processed twice" % (assignor, len(sent), len(duplicated)))


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(*sys.argv[2:7])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3])
