// A Dapr application's lock calls through Dapr's JavaScript SDK (HTTP, its default), one
// step per argument group, one line per step — for the tests of `latchkey dapr`:
//
//     lock STORE ID OWNER EXPIRY_S   ->  success true | success false
//     unlock STORE ID OWNER          ->  status 0 | 1 | 2 (Dapr's unlock statuses)
//
// A failed call prints `error MESSAGE` and the script goes on. The endpoint is found as the
// SDK finds daprd: DAPR_HTTP_PORT, DAPR_API_TOKEN.
import { CommunicationProtocolEnum, DaprClient } from "@dapr/dapr";

const client = new DaprClient({
  daprHost: "127.0.0.1",
  daprPort: process.env.DAPR_HTTP_PORT,
  communicationProtocol: CommunicationProtocolEnum.HTTP,
  daprApiToken: process.env.DAPR_API_TOKEN,
  logger: { level: 0 },
});

const args = process.argv.slice(2);
while (args.length > 0) {
  const step = args.shift();
  try {
    if (step === "lock") {
      const [store, id, owner, expiry] = args.splice(0, 4);
      const taken = await client.lock.lock(store, id, owner, Number(expiry));
      console.log(`success ${taken.success}`);
    } else if (step === "unlock") {
      const [store, id, owner] = args.splice(0, 3);
      const freed = await client.lock.unlock(store, id, owner);
      console.log(`status ${freed.status}`);
    } else {
      throw new Error(`unknown step ${step}`);
    }
  } catch (err) {
    console.log(`error ${String(err.message ?? err).split("\n")[0]}`);
  }
}
process.exit(0);
