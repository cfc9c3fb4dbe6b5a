"""Kafka admin clients against Spate's Kafka listener: DescribeConfigs (a topic's settings
and Spate's fixed facts, the broker's settings, an unknown topic), DescribeCluster (one
broker, cluster "spate"), CreatePartitions (refused: partitions are fixed at creation) and
IncrementalAlterConfigs (retention changed, validated only, back to the default; refusals),
min.insync.replicas (created with it, changed, a single node refusing acks=all writes with
NOT_ENOUGH_REPLICAS while it is above 1, taking acks=1 ones)
and DeleteRecords (to an offset, to the high watermark, past it; a consumer reading from 0
afterwards resets to the new log start) and ListOffsets by time and by the newest time
(-3) with the records' timestamps,
with kafka-python 3.0.12 and confluent-kafka 2.16.1 (pinned in tests/kafka_admin.rs).
TOPIC must exist with 2 partitions and retention.ms 3600000. Exits non-zero on the first
broken expectation. Usage: admin.py BROKER TOPIC"""
import sys
import time

from confluent_kafka import (OFFSET_END, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition as CkTopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                  ConfigResource as CkConfigResource, NewPartitions, NewTopic,
                                  OffsetSpec)
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import InvalidPartitionsError, OffsetOutOfRangeError

broker, topic = sys.argv[1], sys.argv[2]
port = int(broker.rsplit(":", 1)[1])

# kafka-python
admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=20000)
described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                   include_synonyms=True, config_filter="all")
configs = described["topic"][topic]
assert configs["retention.ms"]["value"] == "3600000", configs
assert configs["retention.bytes"]["value"] == "-1", configs
assert int(configs["segment.bytes"]["value"]) > 0, configs
assert configs["cleanup.policy"]["value"] == "delete", configs
assert configs["max.message.bytes"]["value"] == "1048565", configs
assert configs["message.timestamp.type"]["value"] == "CreateTime", configs
assert configs["compression.type"]["value"] == "producer", configs
assert configs["cleanup.policy"]["config_source"] == "DEFAULT_CONFIG", configs
# The node reports effective values without saying whose they are.
assert configs["retention.ms"]["config_source"] == "UNKNOWN", configs
assert configs["retention.ms"]["synonyms"][0]["name"] == "retention.ms", configs
# The default filter leaves out what is a default: Spate's fixed facts.
modified = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
assert set(modified["topic"][topic]) == {"retention.ms", "retention.bytes", "segment.bytes",
                                        "min.insync.replicas"}, modified
assert configs["min.insync.replicas"]["value"] == "1", configs
named = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})],
                               config_filter="all")
assert set(named["topic"][topic]) == {"cleanup.policy"}, named
# kafka-python does not raise per-resource errors: an unknown topic comes back empty.
unknown = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic + "-nope")],
                                 config_filter="all")
assert unknown["topic"][topic + "-nope"] == {}, unknown
brokers = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "0")], config_filter="all")
assert brokers["broker"]["0"]["broker.id"]["value"] == "0", brokers
assert brokers["broker"]["0"]["advertised.listeners"]["value"] == "PLAINTEXT://" + broker, brokers

cluster = admin.describe_cluster()
assert cluster["cluster_id"] == "spate", cluster
assert cluster["controller_id"] == 0, cluster
assert [(b["broker_id"], b["port"]) for b in cluster["brokers"]] == [(0, port)], cluster
# No authorizer: every cluster operation, as Kafka answers without one.
assert "DESCRIBE" in cluster["authorized_operations"], cluster

try:
    admin.create_partitions({topic: 3})
    raise AssertionError("create_partitions succeeded")
except InvalidPartitionsError:
    pass
admin.close()

# confluent-kafka (librdkafka)
ck = AdminClient({"bootstrap.servers": broker})
for resource, future in ck.describe_configs([CkConfigResource("topic", topic)]).items():
    entries = future.result(timeout=20)
    assert entries["retention.ms"].value == "3600000", entries
    assert entries["cleanup.policy"].value == "delete", entries
    assert entries["max.message.bytes"].value == "1048565", entries
for resource, future in ck.describe_configs([CkConfigResource("broker", "0")]).items():
    entries = future.result(timeout=20)
    assert entries["broker.id"].value == "0", entries
for resource, future in ck.describe_configs([CkConfigResource("topic", topic + "-nope")]).items():
    try:
        future.result(timeout=20)
        raise AssertionError("an unknown topic was described")
    except KafkaException as error:
        assert error.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, error

# librdkafka describes the cluster with a Metadata request (DescribeCluster is Java's).
cluster = ck.describe_cluster(request_timeout=20).result()
assert cluster.cluster_id == "spate", cluster
assert [(node.id, node.port) for node in cluster.nodes] == [(0, port)], cluster
assert cluster.controller.id == 0, cluster

for name, future in ck.create_partitions([NewPartitions(topic, 3)], request_timeout=20).items():
    try:
        future.result()
        raise AssertionError("create_partitions succeeded")
    except KafkaException as error:
        assert error.args[0].code() == KafkaError.INVALID_PARTITIONS, error
        assert "fixed at creation" in error.args[0].str(), error


def alter(name, *entries, validate_only=False):
    """incremental_alter_configs of one topic; returns the error code (0 for success)."""
    configs = [ConfigEntry(key, value, incremental_operation=op) for key, value, op in entries]
    resource = CkConfigResource("topic", name, incremental_configs=configs)
    for _, future in ck.incremental_alter_configs([resource], validate_only=validate_only).items():
        try:
            future.result(timeout=20)
            return 0
        except KafkaException as error:
            return error.args[0].code()


def described(name):
    for _, future in ck.describe_configs([CkConfigResource("topic", name)]).items():
        return {key: entry.value for key, entry in future.result(timeout=20).items()}


SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
assert alter(topic, ("retention.ms", "7200000", SET), ("retention.bytes", "1000000000", SET)) == 0
now = described(topic)
assert (now["retention.ms"], now["retention.bytes"]) == ("7200000", "1000000000"), now
# validate_only checks and changes nothing.
assert alter(topic, ("retention.ms", "60000", SET), validate_only=True) == 0
assert described(topic)["retention.ms"] == "7200000"
assert alter(topic, ("retention.ms", "0", SET), validate_only=True) == KafkaError.INVALID_CONFIG
# DELETE goes back to the node's default (retention.bytes: unlimited); -1 is unlimited.
assert alter(topic, ("retention.bytes", None, DELETE), ("retention.ms", "-1", SET)) == 0
now = described(topic)
assert (now["retention.ms"], now["retention.bytes"]) == ("-1", "-1"), now
# Refused with a reason, the topic unchanged.
assert alter(topic, ("segment.bytes", "1048576", SET)) == KafkaError.INVALID_CONFIG
assert alter(topic, ("retention.ms", "soon", SET)) == KafkaError.INVALID_CONFIG
assert alter(topic, ("cleanup.policy", "compact", SET)) == KafkaError.INVALID_CONFIG
assert alter(topic, ("retention.ms", "0", SET)) == KafkaError.INVALID_CONFIG
assert alter(topic + "-nope", ("retention.ms", "1000", SET)) == KafkaError.UNKNOWN_TOPIC_OR_PART
assert described(topic)["retention.ms"] == "-1"

# min.insync.replicas: changed and described; then a topic created with 2 on a single node
# (one replica in sync) refuses acks=all writes (NOT_ENOUGH_REPLICAS, nothing appended) and
# takes acks=1 ones.
assert alter(topic, ("min.insync.replicas", "0", SET)) == KafkaError.INVALID_CONFIG
assert alter(topic, ("min.insync.replicas", "2", SET)) == 0
assert described(topic)["min.insync.replicas"] == "2"
assert alter(topic, ("min.insync.replicas", None, DELETE)) == 0
assert described(topic)["min.insync.replicas"] == "1"
strict_topic = topic + "-strict"
created = ck.create_topics([NewTopic(strict_topic, 1, config={"min.insync.replicas": "2"})])
for _, future in created.items():
    future.result(timeout=20)
assert described(strict_topic)["min.insync.replicas"] == "2"
reports = []
strict = Producer({"bootstrap.servers": broker, "acks": "all", "retries": 0})
strict.produce(strict_topic, value=b"refused",
               on_delivery=lambda error, message: reports.append(error))
assert strict.flush(20) == 0
assert [error.code() for error in reports] == [KafkaError.NOT_ENOUGH_REPLICAS], reports
leader_only = Producer({"bootstrap.servers": broker, "acks": 1})
leader_only.produce(strict_topic, value=b"taken",
                    on_delivery=lambda error, message: reports.append((error, message.offset())))
assert leader_only.flush(20) == 0
assert reports[1:] == [(None, 0)], reports

# DeleteRecords: 10 records in each partition, then the log start moves.
producer = Producer({"bootstrap.servers": broker, "acks": "all"})
for partition in (0, 1):
    for i in range(10):
        producer.produce(topic, value=b"r%d" % i, partition=partition)
assert producer.flush(20) == 0
admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=20000)
deleted = admin.delete_records({TopicPartition(topic, 0): 4})
assert deleted[TopicPartition(topic, 0)]["low_watermark"] == 4, deleted
try:
    admin.delete_records({TopicPartition(topic, 0): 11})
    raise AssertionError("deleting past the high watermark succeeded")
except OffsetOutOfRangeError:
    pass
admin.close()
# librdkafka: to an offset, and to the high watermark (OFFSET_END, -1).
moves = ck.delete_records([CkTopicPartition(topic, 1, 6), CkTopicPartition(topic, 0, OFFSET_END)],
                          request_timeout=20)
lows = {tp.partition: future.result().low_watermark for tp, future in moves.items()}
assert lows == {0: 10, 1: 6}, lows
consumer = Consumer({"bootstrap.servers": broker, "group.id": "unused",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
assert consumer.get_watermark_offsets(CkTopicPartition(topic, 1), timeout=20) == (6, 10)
assert consumer.get_watermark_offsets(CkTopicPartition(topic, 0), timeout=20) == (10, 10)
# Reading from 0 is out of range now: the consumer resets to the log start.
consumer.assign([CkTopicPartition(topic, 1, 0)])
read = []
deadline = time.monotonic() + 20
while len(read) < 4 and time.monotonic() < deadline:
    message = consumer.poll(1)
    # Errors are events here; none is expected.
    if message is not None and message.error() is None:
        read.append((message.offset(), message.value()))
assert read == [(6, b"r6"), (7, b"r7"), (8, b"r8"), (9, b"r9")], read
consumer.close()

# ListOffsets by time and by the newest time (-3, v7): the record's offset and its timestamp.
t0 = int(time.time() * 1000)
for delta in (1000, 5000, 3000):
    producer.produce(topic, value=b"t", partition=1, timestamp=t0 + delta)
assert producer.flush(20) == 0


def listed(spec):
    tp = CkTopicPartition(topic, 1)
    result = ck.list_offsets({tp: spec}, request_timeout=20)[tp].result()
    return (result.offset, result.timestamp)


assert listed(OffsetSpec.max_timestamp()) == (11, t0 + 5000), listed(OffsetSpec.max_timestamp())
assert listed(OffsetSpec.for_timestamp(t0 + 2000)) == (11, t0 + 5000)
assert listed(OffsetSpec.for_timestamp(t0 + 4000)) == (11, t0 + 5000)
assert listed(OffsetSpec.for_timestamp(t0 + 100000))[0] == -1
assert listed(OffsetSpec.earliest())[0] == 6
assert listed(OffsetSpec.latest())[0] == 13
print("admin ok")
