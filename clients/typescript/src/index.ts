// clawgate's TypeScript client: typed from the gateway's OpenRPC schema.
export { Client, ClawgateError, ConnectionClosedError, TlsFingerprintError, type ConnectOptions } from "./client.js";
export {
  RunStreamEndedError,
  type ApprovalRequestsOptions,
  type ApproveOptions,
  type RunResult,
  type SendOptions,
  type WaitForRunOptions,
} from "./helpers.js";
export * from "./payloads.js";
export * from "./generated.js";
