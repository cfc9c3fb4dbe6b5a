// Consumer groups with kafkajs (pinned in package.json; its round-robin assignor): consumers in
// one group, each a child process running this script in worker mode, split a 4-partition
// topic; eachBatch writes the records out and commits (consumer.commitOffsets, autoCommit off)
// after every BATCH records. A third consumer joins (a rebalance); one is killed with SIGKILL
// (its partitions move after its session times out); every record is processed, and a record
// is processed twice only if the killed consumer had processed it after its last commit (the
// at-least-once window: one batch per partition) or a consumer processed it in a batch whose
// commit failed (a rebalance completed between its fetch and its commit). Then the committed offsets (fetchOffsets)
// equal the high watermarks, and the admin lists and describes the group (empty) and deletes it.
//
// Usage: node kafkajs_group.js BROKER TOPIC
//        node kafkajs_group.js worker BROKER TOPIC GROUP OUTPUT
// Exits non-zero on the first broken expectation.
const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const { Kafka, logLevel } = require('kafkajs');

const BATCH = 50;
const PARTITIONS = 4;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref());
const check = (ok, what) => { if (!ok) throw new Error(`broken expectation: ${what}`); };
const client = (broker) => new Kafka({ clientId: 'spate-test', brokers: [broker], logLevel: logLevel.ERROR });

async function worker(broker, topic, group, output) {
  const out = fs.openSync(output, 'a');
  const consumer = client(broker).consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 500 });
  process.on('SIGTERM', () => consumer.disconnect().then(() => process.exit(0), () => process.exit(1)));
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
      for (let i = 0; i < batch.messages.length && isRunning() && !isStale(); i += BATCH) {
        const chunk = batch.messages.slice(i, i + BATCH);
        fs.writeSync(out, chunk.map((m) => `${batch.partition} ${m.offset} ${m.value}\n`).join(''));
        fs.fsyncSync(out);
        chunk.forEach((m) => resolveOffset(m.offset));
        const next = (BigInt(chunk[chunk.length - 1].offset) + 1n).toString();
        try {
          await consumer.commitOffsets([{ topic, partition: batch.partition, offset: next }]);
        } catch (error) { // a rebalance took the partition: it is redone
          console.error('commit failed:', error.message);
          fs.appendFileSync(`${output}.uncommitted`, chunk.map((m) => `${m.value}\n`).join(''));
          return;
        }
        await heartbeat();
      }
    },
  });
}

const processed = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '')
  .split('\n').filter((line) => line).map((line) => line.split(' '));

async function main(broker, topic) {
  const group = `group-${topic}`;
  const kafka = client(broker);
  const admin = kafka.admin();
  await admin.connect();
  check(await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true }), 'topic created');
  const producer = kafka.producer();
  await producer.connect();
  const sent = [];
  const produce = async (count) => {
    const messages = [];
    for (let i = 0; i < count; i++) {
      messages.push({ value: `r${sent.length}`, partition: sent.length % PARTITIONS });
      sent.push(`r${sent.length}`);
    }
    await producer.send({ topic, messages });
  };

  const workdir = process.env.SPATE_TEST_DIR || '.';
  const outputs = {};
  const workers = {};
  const alive = (name) => workers[name].exitCode === null && workers[name].signalCode === null;
  const exited = (name) => (alive(name) ? new Promise((resolve) => workers[name].once('exit', resolve)) : null);
  const start = (name) => {
    outputs[name] = path.join(workdir, `${topic}-${name}.out`);
    workers[name] = spawn(process.execPath, [__filename, 'worker', broker, topic, group, outputs[name]], { stdio: 'inherit' });
  };
  const unique = () => new Set(Object.values(outputs).flatMap((file) => processed(file).map(([, , value]) => value)));
  const waitAll = async (what) => {
    const deadline = Date.now() + 60000;
    let missing;
    while (Date.now() < deadline) {
      const seen = unique();
      missing = sent.filter((value) => !seen.has(value));
      if (missing.length === 0) return;
      for (const name of Object.keys(workers)) check(alive(name) || name === 'a', `worker ${name} exited`);
      await sleep(200);
    }
    throw new Error(`${what}: ${missing.length} records never processed, e.g. ${missing.slice(0, 5)}`);
  };

  try {
    await produce(2000);
    start('a');
    start('b');
    await waitAll('two consumers');
    await produce(1000);
    start('c');
    await waitAll('after a third joined');
    // a is killed while the consumers work through new records: what it processed after its
    // last commit is processed again by the consumer that takes its partitions.
    await produce(1000);
    await sleep(50);
    const killed = exited('a');
    workers.a.kill('SIGKILL');
    await killed;
    const killedAt = processed(outputs.a).length;
    await produce(1000);
    await waitAll('after a consumer was killed');
    const stopped = ['b', 'c'].map((name) => exited(name));
    ['b', 'c'].forEach((name) => workers[name].kill('SIGTERM'));
    const codes = await Promise.race([Promise.all(stopped), sleep(30000).then(() => 'timeout')]);
    check(JSON.stringify(codes) === '[0,0]', `workers b and c stopped: ${JSON.stringify(codes)}`);

    // Duplicates: only records a processed (before it was killed) and processed again ...
    const seen = new Map();
    for (const [name, file] of Object.entries(outputs)) {
      const last = new Map();
      for (const [partition, offset, value] of processed(file)) {
        if (!seen.has(value)) seen.set(value, []);
        seen.get(value).push(name);
        // Per partition, offsets are processed in order by each consumer that owned them.
        check(name === 'a' || Number(offset) > (last.get(partition) ?? -1), `${name} went back on ${partition} at ${offset}`);
        last.set(partition, Number(offset));
      }
    }
    // Or records a worker processed in a batch whose commit failed (a rebalance completed
    // between its fetch and its commit): they are redone by whoever gets the partition.
    const failed = new Set();
    for (const file of Object.values(outputs)) {
      if (fs.existsSync(`${file}.uncommitted`)) {
        fs.readFileSync(`${file}.uncommitted`, 'utf8').split('\n').filter(Boolean).forEach((value) => failed.add(value));
      }
    }
    const duplicated = [...seen].filter(([, names]) => names.length > 1);
    for (const [value, names] of duplicated) check(names.includes('a') || failed.has(value), `${value} processed by ${names}`);
    check(duplicated.length <= BATCH * PARTITIONS + failed.size, `${duplicated.length} processed twice (${failed.size} in batches whose commit failed)`);
    check(killedAt > 0, 'a processed records before it was killed');

    // The commits are the high watermarks.
    const highs = Object.fromEntries((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, p.high]));
    check(Object.values(highs).reduce((sum, high) => sum + Number(high), 0) === sent.length, `highs ${JSON.stringify(highs)}`);
    const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    check(committed.partitions.length === PARTITIONS, JSON.stringify(committed));
    for (const { partition, offset } of committed.partitions) check(offset === highs[partition], `partition ${partition}: committed ${offset}, high ${highs[partition]}`);

    // The admin client sees the group, empty now, and deletes it.
    const listed = (await admin.listGroups()).groups;
    check(listed.some((g) => g.groupId === group), `listed: ${JSON.stringify(listed)}`);
    const [described] = (await admin.describeGroups([group])).groups;
    check(described.errorCode === 0 && described.state === 'Empty' && described.members.length === 0, `described: ${JSON.stringify(described)}`);
    check(described.protocolType === 'consumer', `an empty consumer group keeps its protocol type: ${JSON.stringify(described)}`);
    const deleted = await admin.deleteGroups([group]);
    check(deleted.length === 1 && deleted[0].groupId === group && deleted[0].errorCode === 0, `deleted: ${JSON.stringify(deleted)}`);
    check(!(await admin.listGroups()).groups.some((g) => g.groupId === group), 'listed after delete');
    const [after] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    check(after.partitions.every((p) => Number(p.offset) < 0), `offsets after delete: ${JSON.stringify(after)}`);
    console.log(`kafkajs groups ok: ${sent.length} records, ${duplicated.length} processed twice`);
  } finally {
    Object.keys(workers).forEach((name) => alive(name) && workers[name].kill('SIGKILL'));
    await producer.disconnect();
    await admin.disconnect();
  }
}

const args = process.argv.slice(2);
(args[0] === 'worker' ? worker(...args.slice(1)) : main(...args)).catch((e) => { console.error(e); process.exit(1); });
