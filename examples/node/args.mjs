// Command-line flags shared by both clients: the sampling knobs (antiphon.v1.Sampling in proto/antiphon/v1/sampling.proto,
// the `sampling` object of docs/websocket-protocol.md). Only the flags given are sent; the server fills in its defaults
// and checks every value, answering INVALID_ARGUMENT with the knob's name.

import { parseArgs } from "node:util";

const SAMPLING_HELP = `sampling (each optional; unset takes the server's default):
  --temperature T    0..100, 0 is greedy (default 0.8)
  --top-k K          keep the K likeliest symbols (0, the default, disables)
  --top-p P          nucleus mass in (0, 1] (1, the default, disables)
  --seed S           0..2^64-1: same seed, same text
  --max-tokens N     tokens to generate at most (default 256)
  --stop TEXT        stop before TEXT (repeat for several)
Text arguments read \\n as a newline, \\t as a tab and \\\\ as a backslash.`;

const SAMPLING_OPTIONS = {
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  seed: { type: "string" },
  "max-tokens": { type: "string" },
  stop: { type: "string", multiple: true },
};

class UsageError extends Error {}

/** Parse argv against `options` plus the sampling flags; print usage and exit 2 on a bad command line. */
export function parseCommandLine(usage, options) {
  const help = `${usage}\n${SAMPLING_HELP}`;
  try {
    const { values } = parseArgs({
      options: { ...options, ...SAMPLING_OPTIONS, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      console.log(help);
      process.exit(0);
    }
    return { values, sampling: samplingOf(values) };
  } catch (error) {
    if (!(error instanceof UsageError || error.code?.startsWith("ERR_PARSE_ARGS"))) throw error;
    console.error(`${error.message}\n\n${help}`);
    process.exit(2);
  }
}

/** The sampling object of the flags given, with the wire's field names; `seed` is a BigInt (it may pass 2^53). */
function samplingOf(values) {
  const sampling = {};
  if (values.temperature !== undefined) sampling.temperature = number("--temperature", values.temperature);
  if (values["top-k"] !== undefined) sampling.top_k = integer("--top-k", values["top-k"]);
  if (values["top-p"] !== undefined) sampling.top_p = number("--top-p", values["top-p"]);
  if (values.seed !== undefined) {
    if (!/^\d+$/.test(values.seed)) throw new UsageError(`--seed: not a non-negative integer: ${values.seed}`);
    sampling.seed = BigInt(values.seed);
  }
  if (values["max-tokens"] !== undefined) sampling.max_tokens = integer("--max-tokens", values["max-tokens"]);
  if (values.stop !== undefined) sampling.stop = values.stop.map(unescape);
  return sampling;
}

function number(flag, text) {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value)) throw new UsageError(`${flag}: not a number: ${text}`);
  return value;
}

function integer(flag, text) {
  if (!/^-?\d+$/.test(text)) throw new UsageError(`${flag}: not an integer: ${text}`);
  return Number(text);
}

/** "KING.\\n" as typed in a shell -> "KING." and a newline. */
export function unescape(text) {
  return text.replace(/\\([nt\\])/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
}
