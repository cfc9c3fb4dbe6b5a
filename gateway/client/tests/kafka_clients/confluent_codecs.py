"""confluent-kafka (librdkafka 2.16, pinned in e2e.rs) producing with each codec against Spate's
Kafka listener: for gzip, snappy, lz4 and zstd, a topic TOPIC-CODEC with one partition, 200
compressible records (keys, values, a header) produced with compression.type=CODEC and
acks=all (idempotent for snappy and zstd), every delivery report an offset in order, and a consumer with assign() reading them
back. The topics are left for the caller, which reads them with `spate consume` and checks that
the stored batches are compressed. Usage: confluent_codecs.py BROKER TOPIC"""
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

broker, prefix = sys.argv[1], sys.argv[2]
codecs = ["gzip", "snappy", "lz4", "zstd"]
admin = AdminClient({"bootstrap.servers": broker})
topics = [f"{prefix}-{codec}" for codec in codecs]
for future in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]).values():
    future.result()


def value(i):
    return b"reading %d of sensor seven: temperature nominal, humidity nominal" % i


for codec, topic in zip(codecs, topics):
    delivered = []
    # Idempotence off for gzip and lz4, on for snappy and zstd.
    producer = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": 50,
                         "compression.type": codec,
                         "enable.idempotence": codec in ("snappy", "zstd")})
    for i in range(200):
        producer.produce(topic, key=b"sensor-%d" % (i % 4), value=value(i), headers=[("codec", codec.encode())],
                         on_delivery=lambda error, message: delivered.append((error, message.offset())))
    assert producer.flush(30) == 0, codec
    assert [d for d in delivered if d[0] is not None] == [], (codec, delivered[:3])
    assert [offset for _, offset in delivered] == list(range(200)), (codec, delivered[:10])

    consumer = Consumer({"bootstrap.servers": broker, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records = []
    deadline = time.time() + 30
    while len(records) < 200 and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        records.append((message.offset(), message.key(), message.value(), message.headers()))
    consumer.close()
    expected = [(i, b"sensor-%d" % (i % 4), value(i), [("codec", codec.encode())]) for i in range(200)]
    assert records == expected, (codec, len(records), records[:2])
print("confluent-kafka codecs ok")
