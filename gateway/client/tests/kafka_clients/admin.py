"""Kafka admin clients against Spate's Kafka listener: DescribeConfigs (a topic's settings
and Spate's fixed facts, the broker's settings, an unknown topic), DescribeCluster (one
broker, cluster "spate"), CreatePartitions (refused: partitions are fixed at creation) and
IncrementalAlterConfigs (retention changed, validated only, back to the default; refusals),
with kafka-python 3.0.12 and confluent-kafka 2.16.1 (pinned in tests/kafka_admin.rs).
TOPIC must exist with 2 partitions and retention.ms 3600000. Exits non-zero on the first
broken expectation. Usage: admin.py BROKER TOPIC"""
import sys

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                  ConfigResource as CkConfigResource, NewPartitions)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import InvalidPartitionsError

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
assert set(modified["topic"][topic]) == {"retention.ms", "retention.bytes", "segment.bytes"}, modified
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
print("admin ok")
