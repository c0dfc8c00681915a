// One chat turn with an antiphon server over its WebSocket JSON protocol (docs/websocket-protocol.md).
//
//   node ws_client.mjs --address 127.0.0.1:8765 --session-id alice --persona Fool --message "Good night, my lord."
//
// The reply goes to stdout as its token frames arrive; the done frame's finish reason, the session's turn count and
// the usage go to stderr. Run it again with the same --session-id for the next turn: the server keeps the session.
// An error frame ends it with exit status 1 and "error: CODE: message" on stderr.

import WebSocket from "ws";
import { parseCommandLine, unescape } from "./args.mjs";

const USAGE = `usage: node ws_client.mjs --session-id ID --message TEXT [--address HOST:PORT] [--persona NAME]
                         [--speaker NAME] [--model ID] [sampling flags]
  --address HOST:PORT  the server's WebSocket port (default 127.0.0.1:8765)
  --session-id ID      the chat session (1..128 characters): the same id continues the conversation
  --message TEXT       the user's line (no blank line in it)
  --persona NAME       who replies, a persona of the model (default: the server's)
  --speaker NAME       the name the user's line is written under (default: the server's)
  --model ID           a text model (default: the server's default text model)`;

const REQUEST_ID = "c1";

// JSON.stringify refuses a BigInt, and a JavaScript number loses a seed past 2^53: the seed is written as a marked
// string, then unquoted. The marker starts with NUL, which no command-line argument can hold.
function toJson(frame) {
  const marked = JSON.stringify(frame, (_, value) => (typeof value === "bigint" ? `\0bigint:${value}` : value));
  return marked.replace(/"\\u0000bigint:(\d+)"/g, "$1");
}

function main() {
  const { values, sampling } = parseCommandLine(USAGE, {
    address: { type: "string", default: "127.0.0.1:8765" },
    "session-id": { type: "string" },
    message: { type: "string" },
    persona: { type: "string" },
    speaker: { type: "string" },
    model: { type: "string" },
  });
  for (const flag of ["session-id", "message"]) {
    if (values[flag] === undefined) {
      console.error(`--${flag} is required\n\n${USAGE}`);
      process.exit(2);
    }
  }
  const request = { type: "chat", id: REQUEST_ID, session_id: values["session-id"], message: unescape(values.message) };
  for (const name of ["persona", "speaker", "model"]) {
    if (values[name] !== undefined) request[name] = values[name];
  }
  request.sampling = sampling;

  const url = `ws://${values.address}/`;
  const ws = new WebSocket(url);
  let ended = false; // a done or error frame came, or the connection failed: the close that follows is expected
  let text = "";

  function end(line, status) {
    if (process.stdout.isTTY && !text.endsWith("\n")) process.stdout.write("\n");
    console.error(line);
    process.exitCode = status;
    ended = true;
    ws.close();
  }

  ws.on("open", () => ws.send(toJson(request)));
  ws.on("message", (data, isBinary) => {
    if (isBinary) return; // audio frames: this client does not ask to speak
    const frame = JSON.parse(data.toString("utf8"));
    if (frame.id !== REQUEST_ID && frame.id !== null) return;
    if (frame.type === "token") {
      process.stdout.write(frame.text);
      text += frame.text;
    } else if (frame.type === "done") {
      const { prompt_tokens, completion_tokens } = frame.usage;
      const usage = `prompt_tokens=${prompt_tokens} completion_tokens=${completion_tokens}`;
      end(`finish_reason=${frame.finish_reason} turns=${frame.turns} ${usage}`, 0);
    } else if (frame.type === "error") {
      end(`error: ${frame.code}: ${frame.message}`, 1);
    }
  });
  ws.on("error", (error) => {
    if (!ended) end(`error: cannot talk to ${url}: ${error.message}`, 1);
  });
  ws.on("close", (code, reason) => {
    if (ended) return;
    ended = true;
    console.error(`error: the server closed the connection (${code} ${reason}) before the reply ended`);
    process.exitCode = 1;
  });
}

main();
