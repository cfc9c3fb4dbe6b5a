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
  for (const acks of [-1, 1]) {
    const r = await producer.send({ topic, acks, messages: Array.from({ length: 50 }, (_, i) => ({ key: `k${i}`, value: `v${i}`, headers: { h: 'x' } })) });
    results.push(...r);
  }
  await producer.disconnect();
  const offsets = await admin.fetchTopicOffsets(topic);
  const total = offsets.reduce((sum, p) => sum + Number(p.high), 0);
  if (total !== 100) throw new Error(`stored ${total} records, expected 100: ${JSON.stringify(offsets)}`);
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log('kafkajs ok', JSON.stringify(results));
})().catch((e) => { console.error(e); process.exit(1); });
