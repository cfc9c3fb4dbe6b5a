"""confluent-kafka (librdkafka 2.16, pinned in e2e.rs) producing while the gateway restarts
or the node is killed and restarted:
creates TOPIC (one partition), produces COUNT records at several thousand a second with an
idempotent producer (acks=all, librdkafka's retries), prints "producing" once the first
records are delivered (the test then restarts the gateway), and checks that every record was
delivered, that their offsets are 0..COUNT-1 in send order, and that a consumer reads each
exactly once, in order. Usage: confluent_restart.py BROKER TOPIC COUNT"""
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

broker, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = AdminClient({"bootstrap.servers": broker})
for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
    future.result()

delivered = {}
errors = []


def report(error, message):
    if error is not None:
        errors.append(error)
    else:
        delivered[int(message.value())] = message.offset()


producer = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "linger.ms": 5,
                     "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})
announced = False
for i in range(count):
    producer.produce(topic, value=b"%d" % i, on_delivery=report)
    producer.poll(0)
    if not announced and len(delivered) >= 2000:
        print("producing", flush=True)
        announced = True
    if i % 10 == 0:
        time.sleep(0.001)
assert producer.flush(60) == 0
assert errors == [], errors[:3]
assert sorted(delivered) == list(range(count)), len(delivered)
assert [delivered[i] for i in range(count)] == list(range(count)), "offsets not in send order"

consumer = Consumer({"bootstrap.servers": broker, "group.id": "unused", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
values = []
deadline = time.time() + 30
while len(values) < count and time.time() < deadline:
    message = consumer.poll(0.5)
    if message is None or message.error():
        continue
    values.append(int(message.value()))
# Anything stored twice would show up after the COUNT records.
extra = consumer.consume(num_messages=10, timeout=1.0)
consumer.close()
assert values == list(range(count)), (len(values), values[:5])
assert [m for m in extra if m.error() is None] == [], "records stored twice"
print("restart ok", flush=True)
