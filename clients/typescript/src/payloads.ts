// Typed `chat` payloads: one interface per `state`, joined in a union discriminated by `state`
// (PROTOCOL.md "Chat payloads", "Approvals", "Runs"). Hand-written on top of the generated
// `ChatEvent`, which has every field optional because it covers every state at once.
import type {
  ApprovalDecision,
  CompactionReason,
  EventEnvelope,
  RunError,
  TranscriptMessage,
  Usage,
} from "./generated.js";

/**
 * An enum-like string: the values this SDK knows, for completion and narrowing, but any other
 * string too (the protocol's enum-like fields are open: a newer gateway may send new values).
 * The generated enum types (`ApprovalState`, `Role`, `RunPhase`, ...) already have this form;
 * this is for the enum-like fields the schema types as plain strings.
 */
export type OpenEnum<T extends string> = T | (string & {});

/** What every chat payload carries. Fields this SDK does not know are kept as they came. */
export interface ChatPayloadBase {
  /** The payload's kind; the union {@link ChatPayload} is discriminated by it. */
  state: string;
  /** The session. */
  sessionKey: string;
  /** The run (absent outside runs: `injected`, a `compacted` of `sessions.compact`). */
  runId?: string;
  /** 0, 1, 2... per run (restarting at 0 after `resumed`); absent outside runs. */
  runSeq?: number;
  /** Fields added by a newer gateway. */
  [field: string]: unknown;
}

/** A payload of a run: `runId` and `runSeq` are always there. */
export interface RunPayloadBase extends ChatPayloadBase {
  runId: string;
  runSeq: number;
}

/** `queued`: the run waits behind others of its session. */
export interface QueuedPayload extends RunPayloadBase {
  state: "queued";
  /** Runs ahead of this one. */
  position: number;
}

/** `started`: the run starts; its user message is written. */
export interface StartedPayload extends RunPayloadBase {
  state: "started";
  /** The model. */
  model: string;
  /** The agent running it. */
  agentId?: string;
  /** The user message, as written. */
  userMessage: TranscriptMessage;
}

/**
 * `resumed`: the run goes on after a gateway restart, with the same `runId`; `runSeq` restarts
 * at 0. Drop partial deltas of turns >= `turn` seen before.
 */
export interface ResumedPayload extends RunPayloadBase {
  state: "resumed";
  /** The model call it goes on from. */
  turn: number;
  /** The agent running it. */
  agentId: string;
  /** 1 for the first resumption. */
  attempt: number;
}

/** `delta`: new text of a model call. */
export interface DeltaPayload extends RunPayloadBase {
  state: "delta";
  /** The model call, from 0. */
  turn: number;
  /** New text only. */
  text: string;
}

/** `approval_requested`: a tool call waits for a person (see `Client.approve` / `deny`). */
export interface ApprovalRequestedPayload extends RunPayloadBase {
  state: "approval_requested";
  /** The model call, from 0. */
  turn: number;
  /** The approval to resolve. */
  approvalId: string;
  /** The tool call waiting. */
  toolCallId: string;
  /** The tool. */
  name: string;
  /** The call's input. */
  input: unknown;
  /** When it is denied unless resolved first (ms since the epoch). */
  expiresAt: number;
}

/** `approval_resolved`: someone (or the timeout, or an abort) resolved an approval. */
export interface ApprovalResolvedPayload extends RunPayloadBase {
  state: "approval_resolved";
  /** The approval. */
  approvalId: string;
  /** `allow` or `deny`. */
  decision: ApprovalDecision;
  /** A token name, `local`, `timeout` or `abort`. */
  by: string;
}

/** `tool_start`: a tool call starts. */
export interface ToolStartPayload extends RunPayloadBase {
  state: "tool_start";
  /** The model call, from 0. */
  turn: number;
  /** The call. */
  toolCallId: string;
  /** The tool. */
  name: string;
  /** Its input. */
  input: unknown;
}

/** `tool_end`: a tool call returned (or was denied: `isError`). */
export interface ToolEndPayload extends RunPayloadBase {
  state: "tool_end";
  /** The model call, from 0. */
  turn: number;
  /** The call. */
  toolCallId: string;
  /** The tool. */
  name: string;
  /** The stored tool output. */
  output: string;
  /** Whether the tool failed (or the call was denied). */
  isError: boolean;
}

/** `steered`: a `mode: "steer"` message was written into the run. */
export interface SteeredPayload extends RunPayloadBase {
  state: "steered";
  /** The user message, as written. */
  userMessage: TranscriptMessage;
}

/** `compacted`: the older part of the context was summarised (in a run, or by `sessions.compact`). */
export interface CompactedPayload extends ChatPayloadBase {
  state: "compacted";
  /** In a run: the model call it preceded. */
  turn?: number;
  /** The context estimate before, in tokens. */
  tokensBefore: number;
  /** The context estimate after, in tokens. */
  tokensAfter: number;
  /** `auto`, `manual` or `overflow`. */
  reason: CompactionReason;
}

/** `final` (terminal): the run answered. */
export interface FinalPayload extends RunPayloadBase {
  state: "final";
  /** The last assistant message. */
  message?: TranscriptMessage;
  /** Tokens summed over turns. */
  usage?: Usage;
  /** `end_turn`, `max_tokens`, `max_turns`, `refusal`. */
  stopReason: OpenEnum<"end_turn" | "max_tokens" | "max_turns" | "refusal">;
}

/** `aborted` (terminal): the run was aborted. */
export interface AbortedPayload extends RunPayloadBase {
  state: "aborted";
  /** The text streamed before the abort. */
  partialText?: string;
}

/** `error` (terminal): the run failed. */
export interface ErrorPayload extends RunPayloadBase {
  state: "error";
  /** What failed (`kind`: `auth`, `timeout`, `interrupted`, ...). */
  error: RunError;
}

/** `injected` (outside runs): `chat.inject` appended a message. */
export interface InjectedPayload extends ChatPayloadBase {
  state: "injected";
  /** The message. */
  message: TranscriptMessage;
}

/**
 * A chat payload, discriminated by `state`: `switch (p.state)` narrows to the payload's type.
 *
 * The union names the states this SDK knows; a newer gateway may send others, and they are
 * passed through as they came (never dropped, never an error). So a `default:` branch is
 * reachable: do not put an exhaustiveness check (`assertNever`) there; read such a payload as
 * {@link ChatPayloadBase} (`isKnownChatPayload(p)` tells the two apart).
 */
export type ChatPayload =
  | QueuedPayload
  | StartedPayload
  | ResumedPayload
  | DeltaPayload
  | ApprovalRequestedPayload
  | ApprovalResolvedPayload
  | ToolStartPayload
  | ToolEndPayload
  | SteeredPayload
  | CompactedPayload
  | FinalPayload
  | AbortedPayload
  | ErrorPayload
  | InjectedPayload;

/** The payloads that end a run: exactly one per run. */
export type TerminalChatPayload = FinalPayload | AbortedPayload | ErrorPayload;

/** Every `state` of {@link ChatPayload}. */
export const CHAT_STATES: ReadonlySet<string> = new Set<ChatPayload["state"]>([
  "queued",
  "started",
  "resumed",
  "delta",
  "approval_requested",
  "approval_resolved",
  "tool_start",
  "tool_end",
  "steered",
  "compacted",
  "final",
  "aborted",
  "error",
  "injected",
]);

const TERMINAL_STATES: ReadonlySet<string> = new Set(["final", "aborted", "error"]);

/** Whether `p` is a run's terminal payload (`final`, `aborted` or `error`). */
export function isTerminalPayload(p: { state: string }): p is TerminalChatPayload {
  return TERMINAL_STATES.has(p.state);
}

/** Whether this SDK knows `p.state` (else `p` is a newer gateway's: read it as {@link ChatPayloadBase}). */
export function isKnownChatPayload(p: { state: string }): boolean {
  return CHAT_STATES.has(p.state);
}

/**
 * The typed payload of a `chat` envelope (or a payload already taken out of one). Unknown
 * states come back as they are. Throws a `TypeError` for an envelope of another event, or a
 * payload without a string `state` and `sessionKey`.
 */
export function chatPayload(source: EventEnvelope | Record<string, unknown>): ChatPayload {
  let payload: unknown = source;
  if (typeof (source as Partial<EventEnvelope>).event === "string" && "payload" in source) {
    const env = source as EventEnvelope;
    if (env.event !== "chat") throw new TypeError(`not a chat envelope: ${env.event}`);
    payload = env.payload;
  }
  const p = payload as Record<string, unknown> | null;
  if (p === null || typeof p !== "object" || typeof p.state !== "string" || typeof p.sessionKey !== "string") {
    throw new TypeError("not a chat payload: it needs a string state and sessionKey");
  }
  return p as ChatPayload;
}
