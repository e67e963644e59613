// clawgate's TypeScript client: typed from the gateway's OpenRPC schema.
export { Client, ClawgateError, ConnectionClosedError, type ConnectOptions } from "./client.js";
export * from "./generated.js";
