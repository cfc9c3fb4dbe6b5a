// kafkajs (pinned in package.json / package-lock.json) against Spate's Kafka listener: admin
// create, describe offsets and delete, and a producer sending keyed records with headers at
// acks=all and acks=1. (kafkajs's consumer always joins a group: it comes with consumer
// groups.) Exits non-zero on the first broken expectation. Usage: node kafkajs.js BROKER TOPIC
const { Kafka, logLevel } = require('kafkajs');
const [broker, topic] = process.argv.slice(2);
(async () => {
  const kafka = new Kafka({ clientId: 'spate-test', brokers: [broker], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  const producer = kafka.producer();
  await producer.connect();
  const results = [];
  const stored = async () => (await admin.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.high), 0);
  const send = async (acks) => {
    const messages = Array.from({ length: 50 }, (_, i) => ({ key: `k${i}`, value: `v${i}`, headers: { h: 'x' } }));
    results.push(...(await producer.send({ topic, acks, messages })));
  };
  // acks=-1 is answered after the fdatasync, and the high watermark (the durable end) already
  // covers the batch: visible at once.
  await send(-1);
  if ((await stored()) !== 50) throw new Error(`acks=-1: ${await stored()} records visible, expected 50`);
  // acks=1 is answered once written, before the sync; the records become visible at the
  // durable end within the node's flush interval (docs/kafka.md, "acks and durability"), so
  // wait for it, boundedly.
  await send(1);
  const deadline = Date.now() + 10000;
  let total = await stored();
  while (total !== 100 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    total = await stored();
  }
  await producer.disconnect();
  if (total !== 100) throw new Error(`stored ${total} records, expected 100: ${JSON.stringify(await admin.fetchTopicOffsets(topic))}`);
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log('kafkajs ok', JSON.stringify(results));
})().catch((e) => { console.error(e); process.exit(1); });
