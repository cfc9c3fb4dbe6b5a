"""The scenario the Python consumer-group tests share (confluent_group.py,
kafka_python_group.py): worker processes of one group consume a topic, each writing what it
processed (`PARTITION OFFSET VALUE` lines) to its own file and committing after each batch;
two start, a third joins, the first is killed with SIGKILL while records flow, the others are
stopped with SIGTERM. Checks that every record sent was processed, that a record was processed
twice only if the killed worker had processed it (at most one batch per partition) or a worker
processed it in a batch whose commit failed (a rebalance completed between its fetch and its
commit: Kafka's clients then drop the assignment and the records after the last commit are
redone, by whoever gets the partition), and that the killed worker processed each partition
in offset order.
"""
import os
import signal
import subprocess
import sys
import time


def processed(path):
    try:
        with open(path) as f:
            return [line.split() for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []


def uncommitted(output, values):
    """Records, beside a worker's output, the values of a batch whose commit failed."""
    with open(output + ".uncommitted", "a") as f:
        f.write("".join("%s\n" % value for value in values))
        f.flush()
        os.fsync(f.fileno())


def run(script, broker, topic, group, assignor, produce, sent, batch, partitions):
    """Runs the scenario with `script worker BROKER TOPIC GROUP ASSIGNOR OUTPUT` as the worker;
    `produce(n)` sends n more records and appends their values to `sent`. Returns the values
    processed twice."""
    BATCH, PARTITIONS = batch, partitions
    here = script
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

    # Duplicates: only records a processed (before it was killed), or that a worker processed
    # in a batch whose commit failed, processed again.
    seen = {}
    for name, path in outputs.items():
        for partition, offset, value in processed(path):
            seen.setdefault(value, []).append((name, int(partition), int(offset)))
    failed = set()
    for path in outputs.values():
        try:
            with open(path + ".uncommitted") as f:
                failed.update(f.read().split())
        except FileNotFoundError:
            pass
    duplicated = {value: places for value, places in seen.items() if len(places) > 1}
    for value, places in duplicated.items():
        assert any(name == "a" for name, _, _ in places) or value in failed, (value, places)
    assert len(duplicated) <= BATCH * PARTITIONS + len(failed), (len(duplicated), len(failed))
    assert killed_at > 0
    # Per partition, offsets are processed in order by each consumer that owned them.
    for name, path in outputs.items():
        last = {}
        for partition, offset, _ in processed(path):
            partition, offset = int(partition), int(offset)
            assert offset > last.get(partition, -1) or name != "a", (name, partition, offset)
            last[partition] = offset

    return duplicated
