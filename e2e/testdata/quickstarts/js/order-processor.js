// The order-processor app of the Dapr quickstarts for pub/sub and service
// invocation, written from their README's behaviour: it receives orders,
// as the subscriber of topic "orders" on pubsub "orderpubsub", or as the
// target of the "orders" method, and prints each one.
//
//   node order-processor.js http|sdk pubsub|invoke
//
// The http variant speaks Dapr's HTTP app contract with node:http; the
// sdk variant is the Dapr JS SDK's DaprServer. It listens on APP_PORT.
const http = require("node:http");
const [variant, quickstart] = process.argv.slice(2);
const appPort = process.env.APP_PORT;

async function sdk() {
  const { DaprServer, CommunicationProtocolEnum, HttpMethod } = require("@dapr/dapr");
  const server = new DaprServer({
    serverHost: "127.0.0.1",
    serverPort: appPort,
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    clientOptions: { daprHost: "127.0.0.1", daprPort: process.env.DAPR_HTTP_PORT },
  });
  if (quickstart === "pubsub") {
    await server.pubsub.subscribe("orderpubsub", "orders", async (order) => {
      console.log("Subscriber received: " + JSON.stringify(order));
    });
  } else {
    await server.invoker.listen("orders", async (data) => {
      console.log("Order received: " + data.body);
      return JSON.parse(data.body);
    }, { method: HttpMethod.POST });
  }
  await server.start();
}

function plain() {
  http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      if (quickstart === "pubsub" && req.method === "GET" && req.url === "/dapr/subscribe") {
        res.setHeader("Content-Type", "application/json");
        res.end(JSON.stringify([{ pubsubname: "orderpubsub", topic: "orders", route: "orders" }]));
        return;
      }
      if (req.method === "POST" && req.url === "/orders") {
        if (quickstart === "pubsub") {
          console.log("Subscriber received: " + JSON.stringify(JSON.parse(body).data));
          res.end();
        } else {
          console.log("Order received: " + body);
          res.setHeader("Content-Type", "application/json");
          res.end(body);
        }
        return;
      }
      res.statusCode = 404;
      res.end();
    });
  }).listen(appPort, "127.0.0.1");
}

if (variant === "sdk") {
  sdk().catch((e) => { console.error(e); process.exit(1); });
} else {
  plain();
}
