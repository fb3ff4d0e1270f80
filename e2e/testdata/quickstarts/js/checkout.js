// The checkout app of the Dapr quickstarts for pub/sub and service
// invocation, written from their README's behaviour: it sends ten orders,
// {"orderId":1} to {"orderId":10}, one every ORDER_INTERVAL_MS (1000 by
// default), published to topic "orders" of pubsub "orderpubsub" or posted
// to the "orders" method of app order-processor, printing each, then
// exits.
//
//   node checkout.js http|sdk pubsub|invoke
//
// The http variant calls the runtime on DAPR_HTTP_PORT with fetch; the sdk
// variant is the Dapr JS SDK's DaprClient.
const [variant, quickstart] = process.argv.slice(2);
const interval = Number(process.env.ORDER_INTERVAL_MS || 1000);
const base = `http://localhost:${process.env.DAPR_HTTP_PORT}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  let client;
  if (variant === "sdk") {
    const { DaprClient, HttpMethod } = require("@dapr/dapr");
    client = new DaprClient({ daprHost: "127.0.0.1", daprPort: process.env.DAPR_HTTP_PORT });
    client.HttpMethod = HttpMethod;
  }
  for (let i = 1; i <= 10; i++) {
    const order = { orderId: i };
    if (variant === "sdk" && quickstart === "pubsub") {
      await client.pubsub.publish("orderpubsub", "orders", order);
      console.log("Published data: " + JSON.stringify(order));
    } else if (variant === "sdk") {
      const res = await client.invoker.invoke("order-processor", "orders", client.HttpMethod.POST, order);
      console.log("Order passed: " + JSON.stringify(res));
    } else if (quickstart === "pubsub") {
      const res = await fetch(`${base}/v1.0/publish/orderpubsub/orders`, {
        method: "POST", body: JSON.stringify(order), headers: { "Content-Type": "application/json" },
      });
      if (!res.ok) throw new Error(`publish: ${res.status} ${await res.text()}`);
      console.log("Published data: " + JSON.stringify(order));
    } else {
      const res = await fetch(`${base}/orders`, {
        method: "POST", body: JSON.stringify(order),
        headers: { "Content-Type": "application/json", "dapr-app-id": "order-processor" },
      });
      if (!res.ok) throw new Error(`invoke: ${res.status} ${await res.text()}`);
      console.log("Order passed: " + (await res.text()));
    }
    await sleep(interval);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
