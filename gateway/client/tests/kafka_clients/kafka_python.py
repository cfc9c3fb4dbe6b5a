"""kafka-python (pinned in e2e.rs) against Spate's Kafka listener: admin (create with a
setting, compaction refused, exists, delete), a producer with its defaults (idempotent since
kafka-python 3: InitProducerId) with keys and headers, and a consumer without a group
(assign).
Exits non-zero on the first broken expectation. Usage: kafka_python.py BROKER TOPIC"""
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import InvalidConfigurationError, TopicAlreadyExistsError

broker, topic = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=20000)
admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"retention.ms": "3600000"})])
assert topic in admin.list_topics(), admin.list_topics()
try:
    admin.create_topics([NewTopic(topic + "-compacted", 1, 1, topic_configs={"cleanup.policy": "compact"})])
    raise AssertionError("cleanup.policy=compact was accepted")
except InvalidConfigurationError as error:
    assert "compaction is not supported" in str(error), error
try:
    admin.create_topics([NewTopic(topic, 2, 1)])
    raise AssertionError("a second create succeeded")
except TopicAlreadyExistsError:
    pass

producer = KafkaProducer(bootstrap_servers=broker, acks="all")
sent = [
    producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"x%d" % i)])
    for i in range(200)
]
producer.flush()
stored = [future.get(timeout=20) for future in sent]
assert sorted({meta.partition for meta in stored}) == [0, 1], stored[:3]
for partition in (0, 1):
    offsets = [meta.offset for meta in stored if meta.partition == partition]
    assert offsets == list(range(len(offsets))), offsets[:10]

consumer = KafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False,
                         consumer_timeout_ms=10000)
partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
consumer.assign(partitions)
consumer.seek_to_beginning()
records = [record for record in consumer]
got = sorted((record.key, record.value, tuple(record.headers)) for record in records)
want = sorted((b"k%d" % i, b"v%d" % i, (("h", b"x%d" % i),)) for i in range(200))
assert got == want, (len(got), got[:3])
ends = consumer.end_offsets(partitions)
assert sum(ends.values()) == 200, ends
consumer.close()
admin.delete_topics([topic])
assert topic not in admin.list_topics()
print("kafka-python ok")
