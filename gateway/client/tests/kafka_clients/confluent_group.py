"""Consumer groups with confluent-kafka (librdkafka): consumers in one group split a
4-partition topic and commit; a third joins (a rebalance); one is killed with SIGKILL (its
partitions move after its session times out); every record is processed, and a record is
processed twice only if the killed consumer had processed it after its last commit (the
at-least-once window: one batch per partition) or a consumer processed it in a batch whose
commit failed (a rebalance completed between the batch's fetch and its commit). Then the committed offsets equal the high
watermarks, the group is described and listed by the admin client, and deleted once empty.

Usage: python confluent_group.py BROKER TOPIC ASSIGNOR
       python confluent_group.py worker BROKER TOPIC GROUP ASSIGNOR OUTPUT
Exits non-zero on the first broken expectation.
"""
import os
import signal
import sys

from confluent_kafka import Consumer, Producer, TopicPartition, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewTopic

import group_scenario

BATCH = 50
PARTITIONS = 4


def worker(broker, topic, group, assignor, output):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    consumer = Consumer({
        "bootstrap.servers": broker,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": assignor,
    })
    consumer.subscribe([topic])
    with open(output, "a", buffering=1) as out:
        while not stop:
            messages = consumer.consume(num_messages=BATCH, timeout=0.5)
            good = [m for m in messages if m.error() is None]
            for m in messages:
                if m.error() is not None:
                    print("consumer error:", m.error(), file=sys.stderr, flush=True)
            if not good:
                continue
            for m in good:
                out.write("%d %d %s\n" % (m.partition(), m.offset(), m.value().decode()))
            out.flush()
            os.fsync(out.fileno())
            try:
                consumer.commit(asynchronous=False)
            except Exception as error:  # a rebalance took the partitions: they are redone
                print("commit failed:", error, file=sys.stderr, flush=True)
                group_scenario.uncommitted(output, [m.value().decode() for m in good])
    consumer.close()


def main(broker, topic, assignor):
    group = "group-" + topic
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    sent = []

    def produce(count):
        for _ in range(count):
            value = "r%d" % len(sent)
            producer.produce(topic, value=value.encode(), partition=len(sent) % PARTITIONS)
            sent.append(value)
        assert producer.flush(30) == 0

    duplicated = group_scenario.run(os.path.abspath(__file__), broker, topic, group, assignor,
                                    produce, sent, BATCH, PARTITIONS)

    # The commits are the high watermarks.
    checker = Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})
    committed = checker.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
    for tp in committed:
        low, high = checker.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=20)
        assert tp.offset == high, (tp.partition, tp.offset, high)
    checker.close()

    # The admin client sees the group, empty now, and deletes it.
    groups = admin.list_consumer_groups(request_timeout=20).result()
    assert group in [g.group_id for g in groups.valid], groups.valid
    described = admin.describe_consumer_groups([group], request_timeout=20)[group].result()
    assert described.members == [], described.members
    assert not described.is_simple_consumer_group, "an empty consumer group keeps its protocol type"
    for future in admin.delete_consumer_groups([group], request_timeout=20).values():
        future.result()
    listed = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])], request_timeout=20)
    for future in listed.values():
        offsets = future.result().topic_partitions
        assert offsets[0].offset < 0, offsets
    print("confluent-kafka groups (%s) ok: %d records, %d processed twice" % (assignor, len(sent), len(duplicated)))


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(*sys.argv[2:7])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3])
