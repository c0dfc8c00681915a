// One chat completion from an antiphon server through OpenAI's own Node SDK (the `openai` package), pointed at the
// server's OpenAI-compatible API (docs/http-api.md): what a front end built on that SDK does.
//
//   node openai_chat.mjs --base-url http://127.0.0.1:8000/v1 --model char-lstm/falstaff --message "Good morrow."
//   node openai_chat.mjs --api responses ...      (the same reply through the Responses API, streamed as its events)
//   OPENAI_API_KEY=KEY node openai_chat.mjs ...   (a server started with --api-key; any value for an open server)
//
// The reply streams to stdout as its chunks arrive; the finish reason and the usage (stream_options.include_usage)
// go to stderr (with --api responses: the response's status and usage). An error from the server ends it with exit
// status 1 and "error: STATUS: message" on stderr.

import OpenAI from "openai";
import { parseCommandLine, unescape } from "./args.mjs";

const USAGE = `usage: node openai_chat.mjs --message TEXT [--base-url URL] [--model ID] [--system TEXT] [--api API]
                           [sampling flags]
  --base-url URL   the server's OpenAI-compatible API (default http://127.0.0.1:8000/v1)
  --api API        chat (Chat Completions, the default) or responses (the Responses API)
  --model ID       a model of GET /v1/models: the text model, or MODEL/PERSONA to pick who replies
  --message TEXT   the user's message
  --system TEXT    a system message before it (optional)
The key is read from OPENAI_API_KEY (any value for a server without keys).`;

async function main() {
  const { values, sampling } = parseCommandLine(USAGE, {
    "base-url": { type: "string", default: "http://127.0.0.1:8000/v1" },
    model: { type: "string", default: "char-lstm" },
    message: { type: "string" },
    system: { type: "string" },
    api: { type: "string", default: "chat" },
  });
  if (!["chat", "responses"].includes(values.api)) {
    console.error(`--api: chat or responses, got ${values.api}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.message === undefined) {
    console.error(`--message is required\n\n${USAGE}`);
    process.exit(2);
  }
  const client = new OpenAI({
    baseURL: values["base-url"],
    apiKey: process.env.OPENAI_API_KEY ?? "none",
    maxRetries: 0,
  });
  if (values.api === "responses") return respond(client, values, sampling);
  const messages = [];
  if (values.system !== undefined) messages.push({ role: "system", content: unescape(values.system) });
  messages.push({ role: "user", content: unescape(values.message) });
  const request = { model: values.model, messages, stream: true, stream_options: { include_usage: true } };
  if (sampling.temperature !== undefined) request.temperature = sampling.temperature;
  if (sampling.top_p !== undefined) request.top_p = sampling.top_p;
  if (sampling.top_k !== undefined) request.top_k = sampling.top_k; // antiphon's own, passed through by the SDK
  if (sampling.max_tokens !== undefined) request.max_completion_tokens = sampling.max_tokens;
  if (sampling.stop !== undefined) request.stop = sampling.stop;
  if (sampling.seed !== undefined) request.seed = Number(sampling.seed); // the SDK's seed is a number

  let finish = null;
  let usage = null;
  try {
    const stream = await client.chat.completions.create(request);
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice?.delta?.content) process.stdout.write(choice.delta.content);
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
  } catch (error) {
    if (error instanceof OpenAI.APIError) {
      console.error(`error: ${error.status ?? "-"}: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
  console.error(
    `finish_reason=${finish} prompt_tokens=${usage?.prompt_tokens} completion_tokens=${usage?.completion_tokens}`,
  );
}

/** The same reply through the Responses API: `instructions` for the system text, the text as delta events. */
async function respond(client, values, sampling) {
  const request = { model: values.model, input: unescape(values.message), stream: true };
  if (values.system !== undefined) request.instructions = unescape(values.system);
  if (sampling.temperature !== undefined) request.temperature = sampling.temperature;
  if (sampling.top_p !== undefined) request.top_p = sampling.top_p;
  if (sampling.top_k !== undefined) request.top_k = sampling.top_k;
  if (sampling.max_tokens !== undefined) request.max_output_tokens = sampling.max_tokens;
  if (sampling.seed !== undefined) request.seed = Number(sampling.seed);
  let response = null;
  try {
    const stream = await client.responses.create(request);
    for await (const event of stream) {
      if (event.type === "response.output_text.delta") process.stdout.write(event.delta);
      if (event.type === "response.completed" || event.type === "response.incomplete") response = event.response;
      if (event.type === "error") throw new Error(event.message);
    }
  } catch (error) {
    if (error instanceof OpenAI.APIError) {
      console.error(`error: ${error.status ?? "-"}: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
  const usage = response?.usage;
  console.error(
    `status=${response?.status} input_tokens=${usage?.input_tokens} output_tokens=${usage?.output_tokens}`,
  );
}

await main();
