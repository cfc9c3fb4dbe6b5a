"""confluent-kafka (librdkafka 2.16) and kafka-python (pinned in e2e.rs) over TLS with client
certificates against Spate's Kafka listener (--kafka-tls-cert, --kafka-client-ca): each
produces at acks=all and reads everything back; a client without a certificate and one with a
certificate another CA issued are refused. Usage: tls_clients.py BROKER TOPIC CERTS OTHER
(CERTS: the directory with ca.pem, client.pem and client.key; OTHER: the same of another CA)"""
import sys
import time

import kafka
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

broker, topic, certs, other = sys.argv[1:5]


def librdkafka_ssl(directory, with_certificate=True):
    settings = {"bootstrap.servers": broker, "security.protocol": "SSL",
                "ssl.ca.location": f"{certs}/ca.pem"}
    if with_certificate:
        settings["ssl.certificate.location"] = f"{directory}/client.pem"
        settings["ssl.key.location"] = f"{directory}/client.key"
    return settings


admin = AdminClient(librdkafka_ssl(certs))
for future in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
    future.result()

# confluent-kafka: 100 records at acks=all.
delivered = []
producer = Producer({**librdkafka_ssl(certs), "acks": "all", "linger.ms": 5})
for i in range(100):
    producer.produce(topic, key=b"c%d" % i, value=b"confluent %d" % i,
                     on_delivery=lambda error, message: delivered.append(error))
assert producer.flush(30) == 0
assert delivered == [None] * 100, delivered[:3]

# kafka-python: 100 more.
python_producer = kafka.KafkaProducer(
    bootstrap_servers=broker, security_protocol="SSL", ssl_cafile=f"{certs}/ca.pem",
    ssl_certfile=f"{certs}/client.pem", ssl_keyfile=f"{certs}/client.key", acks="all")
futures = [python_producer.send(topic, key=b"p%d" % i, value=b"python %d" % i) for i in range(100)]
python_producer.flush(30)
for future in futures:
    future.get(timeout=30)
python_producer.close()

expected = sorted([(b"c%d" % i, b"confluent %d" % i) for i in range(100)]
                  + [(b"p%d" % i, b"python %d" % i) for i in range(100)])

consumer = Consumer({**librdkafka_ssl(certs), "group.id": "unused", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(2)])
records = []
deadline = time.time() + 30
while len(records) < 200 and time.time() < deadline:
    message = consumer.poll(1.0)
    if message is None or message.error():
        continue
    records.append((message.key(), message.value()))
consumer.close()
assert sorted(records) == expected, len(records)

python_consumer = kafka.KafkaConsumer(
    bootstrap_servers=broker, security_protocol="SSL", ssl_cafile=f"{certs}/ca.pem",
    ssl_certfile=f"{certs}/client.pem", ssl_keyfile=f"{certs}/client.key",
    enable_auto_commit=False, consumer_timeout_ms=10000)
python_consumer.assign([kafka.TopicPartition(topic, partition) for partition in range(2)])
python_consumer.seek_to_beginning()
records = []
for message in python_consumer:
    records.append((message.key, message.value))
    if len(records) == 200:
        break
python_consumer.close()
assert sorted(records) == expected, len(records)

# Refused: no client certificate, and a certificate another CA issued (librdkafka, then
# kafka-python).
for name, settings in [("no certificate", librdkafka_ssl(certs, with_certificate=False)),
                       ("another CA's certificate", librdkafka_ssl(other))]:
    try:
        AdminClient(settings).list_topics(timeout=5)
    except KafkaException:
        pass
    else:
        raise AssertionError(f"librdkafka with {name} was admitted")
for name, files in [("no certificate", {}),
                    ("another CA's certificate", {"ssl_certfile": f"{other}/client.pem",
                                                  "ssl_keyfile": f"{other}/client.key"})]:
    try:
        refused = kafka.KafkaProducer(bootstrap_servers=broker, security_protocol="SSL",
                                      ssl_cafile=f"{certs}/ca.pem", max_block_ms=5000,
                                      bootstrap_timeout_ms=5000, **files)
        refused.send(topic, b"refused").get(timeout=10)
    except kafka.errors.KafkaError:
        pass
    else:
        raise AssertionError(f"kafka-python with {name} was admitted")
print("tls clients ok")
