"""A consumer group's commits through the loss of its coordinator's node, with
confluent-kafka (librdkafka), against a cluster (`spate up --nodes 3`).

  python confluent_group_failover.py produce BROKER TOPIC COUNT
      creates TOPIC (4 partitions) and writes COUNT records "record N" (acks=all).
  python confluent_group_failover.py consume BROKER TOPIC GROUP COUNT OUTPUT
      joins GROUP, reads COUNT records from where the group committed (the earliest
      offsets if it never did), commits exactly what it read (synchronously), leaves the
      group and appends "PARTITION OFFSET VALUE" per record to OUTPUT.

The test runs `consume` twice and kills the node leading the group's offsets partition in
between: the second run must start where the first committed (no record read twice, none
skipped). Exits non-zero on the first broken expectation.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 4
DEADLINE_S = 90


def produce(broker, topic, count):
    admin = AdminClient({"bootstrap.servers": broker})
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)])
    futures[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": broker, "acks": "all", "enable.idempotence": True})
    failed = []

    def delivered(error, _message):
        if error is not None:
            failed.append(error)

    for n in range(count):
        producer.produce(topic, value=b"record %d" % n, partition=n % PARTITIONS, on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(30)
    if left or failed:
        sys.exit("not delivered: %d left, failures %s" % (left, failed[:3]))


def consume(broker, topic, group, count, output):
    consumer = Consumer({
        "bootstrap.servers": broker,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    consumer.subscribe([topic])
    read = []
    deadline = time.monotonic() + DEADLINE_S
    while len(read) < count:
        if time.monotonic() > deadline:
            sys.exit("read %d of %d records within %d s" % (len(read), count, DEADLINE_S))
        for message in consumer.consume(num_messages=count - len(read), timeout=0.5):
            if message.error() is not None:
                print("consumer error:", message.error(), file=sys.stderr, flush=True)
                continue
            read.append(message)
    # Commit what was read, retrying while the coordinator moves (a retriable error).
    while True:
        try:
            consumer.commit(asynchronous=False)
            break
        except KafkaException as error:
            if time.monotonic() > deadline or not error.args[0].retriable():
                sys.exit("commit failed: %s" % error)
            time.sleep(0.2)
    consumer.close()
    with open(output, "a") as out:
        for message in read:
            out.write("%d %d %s\n" % (message.partition(), message.offset(), message.value().decode()))


def main():
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "consume":
        consume(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
