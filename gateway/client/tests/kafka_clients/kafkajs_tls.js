// kafkajs (pinned in package.json) over TLS with a client certificate against Spate's Kafka
// listener (--kafka-tls-cert, --kafka-client-ca): admin create, a producer at acks=all, the
// high watermarks; a client without a certificate is refused. Usage: node kafkajs_tls.js
// BROKER TOPIC CERTS (CERTS: the directory with ca.pem, client.pem and client.key)
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');
const [broker, topic, certs] = process.argv.slice(2);
const ca = [fs.readFileSync(`${certs}/ca.pem`, 'utf-8')];
(async () => {
  const kafka = new Kafka({
    clientId: 'spate-tls-test', brokers: [broker], logLevel: logLevel.NOTHING,
    ssl: { ca, cert: fs.readFileSync(`${certs}/client.pem`, 'utf-8'), key: fs.readFileSync(`${certs}/client.key`, 'utf-8') },
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  const producer = kafka.producer();
  await producer.connect();
  const messages = Array.from({ length: 50 }, (_, i) => ({ key: `k${i}`, value: `v${i}` }));
  await producer.send({ topic, acks: -1, messages });
  const stored = (await admin.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.high), 0);
  if (stored !== 50) throw new Error(`${stored} records stored, expected 50`);
  await producer.disconnect();
  await admin.disconnect();
  const anonymous = new Kafka({
    clientId: 'spate-tls-anonymous', brokers: [broker], logLevel: logLevel.NOTHING,
    ssl: { ca }, connectionTimeout: 3000, retry: { retries: 0 },
  }).admin();
  let admitted = true;
  try {
    await anonymous.connect();
    await anonymous.listTopics();
  } catch (error) {
    admitted = false;
  }
  if (admitted) throw new Error('a client without a certificate was admitted');
  console.log('kafkajs tls ok');
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
