"""Consumer groups with confluent-kafka (librdkafka): consumers in one group split a
4-partition topic and commit; a third joins (a rebalance); one is killed with SIGKILL (its
partitions move after its session times out); every record is processed, and a record is
processed twice only if the killed consumer had processed it after its last commit (the
at-least-once window: one batch per partition). Then the committed offsets equal the high
watermarks, the group is described and listed by the admin client, and deleted once empty.

Usage: python confluent_group.py BROKER TOPIC ASSIGNOR
       python confluent_group.py worker BROKER TOPIC GROUP ASSIGNOR OUTPUT
Exits non-zero on the first broken expectation.
"""
import os
import signal
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewTopic

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
    consumer.close()


def processed(path):
    try:
        with open(path) as f:
            return [line.split() for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []


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

    here = os.path.abspath(__file__)
    workdir = os.environ.get("SPATE_TEST_DIR", ".")
    outputs = {}
    workers = {}

    def start(name):
        outputs[name] = os.path.join(workdir, "%s-%s.out" % (topic, name))
        workers[name] = subprocess.Popen(
            [sys.executable, here, "worker", broker, topic, group, assignor, outputs[name]])

    def unique():
        return {value for path in outputs.values() for _, _, value in processed(path)}

    def wait_all(what):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if unique() >= set(sent):
                return
            for name, process in workers.items():
                assert process.poll() is None or name == "a", "worker %s exited" % name
            time.sleep(0.2)
        missing = sorted(set(sent) - unique())
        raise AssertionError("%s: %d records never processed, e.g. %s" % (what, len(missing), missing[:5]))

    produce(2000)
    start("a")
    start("b")
    wait_all("two consumers")
    produce(1000)
    start("c")
    wait_all("after a third joined")
    # a is killed while the consumers work through new records: what it processed after its
    # last commit is processed again by the consumer that takes its partitions.
    produce(1000)
    time.sleep(0.05)
    workers["a"].send_signal(signal.SIGKILL)
    workers["a"].wait()
    killed_at = len(processed(outputs["a"]))
    produce(1000)
    wait_all("after a consumer was killed")
    for name in ("b", "c"):
        workers[name].send_signal(signal.SIGTERM)
    for name in ("b", "c"):
        assert workers[name].wait(30) == 0, "worker %s failed" % name

    # Duplicates: only records a processed (before it was killed) and processed again.
    seen = {}
    for name, path in outputs.items():
        for partition, offset, value in processed(path):
            seen.setdefault(value, []).append((name, int(partition), int(offset)))
    duplicated = {value: places for value, places in seen.items() if len(places) > 1}
    for value, places in duplicated.items():
        assert any(name == "a" for name, _, _ in places), (value, places)
    assert len(duplicated) <= BATCH * PARTITIONS, len(duplicated)
    assert killed_at > 0
    # Per partition, offsets are processed in order by each consumer that owned them.
    for name, path in outputs.items():
        last = {}
        for partition, offset, _ in processed(path):
            partition, offset = int(partition), int(offset)
            assert offset > last.get(partition, -1) or name != "a", (name, partition, offset)
            last[partition] = offset

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
