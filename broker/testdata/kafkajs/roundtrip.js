// Driven by broker/kafkajs_test.go: kafkajs (old, non-flexible protocol
// versions) against the broker given as argv[2]. Creates a topic with the
// admin client, produces 50 keyed records with the idempotent producer at
// acks=all, and consumes them all in a consumer group. Prints "OK <n>" or
// exits 1 with the error.
const { Kafka, logLevel } = require('kafkajs');

const broker = process.argv[2];
const kafka = new Kafka({ clientId: 'kafkajs-test', brokers: [broker], logLevel: logLevel.ERROR });

(async () => {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'kafkajs', numPartitions: 2 }], waitForLeaders: true });
  await admin.disconnect();

  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 50; i++) messages.push({ key: 'k' + (i % 5), value: 'v' + i });
  await producer.send({ topic: 'kafkajs', messages, acks: -1 });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: 'kafkajs-group' });
  await consumer.connect();
  await consumer.subscribe({ topic: 'kafkajs', fromBeginning: true });
  const seen = new Map();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out with ' + seen.size + ' of 50 records')), 30000);
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        const v = message.value.toString();
        if (seen.has(v)) throw new Error('duplicate ' + v);
        seen.set(v, message.key.toString());
        if (seen.size === 50) { clearTimeout(timer); resolve(); }
      },
    });
  });
  await consumer.disconnect();
  for (let i = 0; i < 50; i++) {
    if (seen.get('v' + i) !== 'k' + (i % 5)) throw new Error('record v' + i + ' has key ' + seen.get('v' + i));
  }
  console.log('OK ' + seen.size);
})().catch((e) => { console.error('FAIL ' + (e && e.stack || e)); process.exit(1); });
