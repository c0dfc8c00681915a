// A persona's reply from an antiphon server through the Vercel AI SDK (`ai` and `@ai-sdk/openai`), whose OpenAI
// provider speaks the Responses API by default (POST /v1/responses, docs/http-api.md): what a front end built on that
// SDK does, with no antiphon code.
//
//   node ai_sdk_chat.mjs --base-url http://127.0.0.1:8000/v1 --model char-lstm/falstaff --message "Good morrow."
//   node ai_sdk_chat.mjs ... --system "A tavern." --temperature 0
//   OPENAI_API_KEY=KEY node ai_sdk_chat.mjs ...   (a server started with --api-key; any value for an open server)
//
// The reply streams to stdout as it arrives; the finish reason and the usage go to stderr. An error from the server
// ends it with exit status 1 and "error: message" on stderr.

import { createOpenAI } from "@ai-sdk/openai";
import { streamText } from "ai";
import { parseCommandLine, unescape } from "./args.mjs";

const USAGE = `usage: node ai_sdk_chat.mjs --message TEXT [--base-url URL] [--model ID] [--system TEXT] [sampling flags]
  --base-url URL   the server's OpenAI-compatible API (default http://127.0.0.1:8000/v1)
  --model ID       a model of GET /v1/models: the text model, or MODEL/PERSONA to pick who replies
  --message TEXT   the user's message
  --system TEXT    a system message before it (optional)
The AI SDK sends temperature, top-p and max tokens; it has no seed for the Responses API.
The key is read from OPENAI_API_KEY (any value for a server without keys).`;

globalThis.AI_SDK_LOG_WARNINGS = false; // its notes on unsupported settings would mix with the usage line

const { values, sampling } = parseCommandLine(USAGE, {
  "base-url": { type: "string", default: "http://127.0.0.1:8000/v1" },
  model: { type: "string", default: "char-lstm" },
  message: { type: "string" },
  system: { type: "string" },
});
if (values.message === undefined) {
  console.error(`--message is required\n\n${USAGE}`);
  process.exit(2);
}
const openai = createOpenAI({ baseURL: values["base-url"], apiKey: process.env.OPENAI_API_KEY ?? "none" });
let failure = null;
const result = streamText({
  model: openai(values.model), // the Responses API (openai.chat(...) would use Chat Completions)
  system: values.system === undefined ? undefined : unescape(values.system),
  prompt: unescape(values.message),
  temperature: sampling.temperature,
  topP: sampling.top_p,
  maxOutputTokens: sampling.max_tokens,
  maxRetries: 0,
  onError: ({ error }) => {
    failure = error;
  },
});
for await (const text of result.textStream) process.stdout.write(text);
if (failure !== null) {
  console.error(`error: ${failure.message ?? failure}`);
  process.exit(1);
}
const usage = await result.usage;
console.error(
  `finish_reason=${await result.finishReason} input_tokens=${usage.inputTokens} output_tokens=${usage.outputTokens}`,
);
