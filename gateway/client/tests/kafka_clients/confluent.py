"""confluent-kafka (librdkafka 2.16, pinned in e2e.rs) against Spate's Kafka listener: admin
create and delete, producers (acks=all; plain and idempotent) with keys and headers whose
delivery reports give dense offsets, and a consumer with assign() reading everything back. Usage:
confluent.py BROKER TOPIC"""
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

broker, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": broker})
for future in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
    future.result()
assert topic in admin.list_topics(timeout=20).topics

delivered = []
plain = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": 5})
idempotent = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "linger.ms": 5})
for i in range(300):
    producer = idempotent if i % 2 else plain
    producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"x")],
                     on_delivery=lambda error, message: delivered.append(
                         (error, message.partition(), message.offset())))
assert plain.flush(30) == 0
assert idempotent.flush(30) == 0
assert [d for d in delivered if d[0] is not None] == [], delivered[:3]
for partition in range(3):
    offsets = sorted(offset for _, p, offset in delivered if p == partition)
    assert offsets == list(range(len(offsets))), offsets[:10]

# librdkafka wants a group id even for assign() (nothing is committed here).
consumer = Consumer({"bootstrap.servers": broker, "group.id": "unused",
                     "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(3)])
records = []
deadline = time.time() + 30
while len(records) < 300 and time.time() < deadline:
    message = consumer.poll(1.0)
    if message is None or message.error():
        continue
    records.append((message.key(), message.value(), message.headers()))
consumer.close()
assert sorted(records) == sorted((b"k%d" % i, b"v%d" % i, [("h", b"x")]) for i in range(300)), len(records)
for future in admin.delete_topics([topic]).values():
    future.result()
print("confluent-kafka ok")
