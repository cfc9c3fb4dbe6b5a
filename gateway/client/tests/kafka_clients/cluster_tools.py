"""Helpers shared by the scripts that run Kafka clients against a `spate up --nodes 3`
cluster (moves.py, epochs.py)."""
import time


def wait(what, check, seconds=30):
    """`check()`'s first truthy value, asked every 0.2 s; fails after `seconds`."""
    deadline = time.time() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, f"{what} within {seconds} s"
        time.sleep(0.2)


def placement_of(admin, topic):
    """(leader, replicas, isr) of partition 0 of `topic`, as Kafka Metadata says
    (`admin`: a confluent-kafka AdminClient)."""
    partition = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
    return partition.leader, list(partition.replicas), sorted(partition.isrs)
