// Stream text from an antiphon server over gRPC (service antiphon.v1.Generation): ListModels, then GenerateText.
//
//   node grpc_client.mjs --address 127.0.0.1:50051 --prompt "KING.\n" --max-tokens 60 --seed 1
//
// The text goes to stdout as it streams; the models served and a last line with the finish reason and usage go to
// stderr, so `node grpc_client.mjs ... > out.txt` keeps the text alone. A gRPC error ends it with exit status 1 and
// "error: CODE: details" on stderr.

import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { parseCommandLine, unescape } from "./args.mjs";

// The repository's proto/ is the contract, read at start-up: there is no generated code to keep in step with it.
const PROTO_DIR = fileURLToPath(new URL("../../proto/", import.meta.url));

const USAGE = `usage: node grpc_client.mjs [--address HOST:PORT] [--model ID] [--prompt TEXT] [sampling flags]
  --address HOST:PORT  the server's gRPC port (default 127.0.0.1:50051)
  --model ID           a text model that ListModels names (default: the server's default text model)
  --prompt TEXT        the text to continue (default: empty)`;

function loadService() {
  const definition = protoLoader.loadSync("antiphon/v1/generation.proto", {
    includeDirs: [PROTO_DIR],
    keepCase: true, // the .proto's field names: finish_reason, not finishReason
    enums: String, // "FINISH_REASON_LENGTH", not 2
    longs: String, // uint64 seeds and int64 sample counts pass 2^53
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).antiphon.v1.Generation;
}

function listModels(client) {
  return new Promise((resolve, reject) => {
    client.ListModels({}, (error, response) => (error ? reject(error) : resolve(response.models)));
  });
}

function describe(model) {
  const kind = model.kind.replace("MODEL_KIND_", "").toLowerCase();
  return `${model.id} (${kind}${model.is_default ? ", default" : ""})`;
}

async function main() {
  const { values, sampling } = parseCommandLine(USAGE, {
    address: { type: "string", default: "127.0.0.1:50051" },
    model: { type: "string", default: "" },
    prompt: { type: "string", default: "" },
  });
  const Generation = loadService();
  const client = new Generation(values.address, grpc.credentials.createInsecure());
  try {
    console.error(`models: ${(await listModels(client)).map(describe).join(", ")}`);
    const request = {
      model: values.model,
      prompt: unescape(values.prompt),
      sampling: { ...sampling, seed: sampling.seed?.toString() },
    };
    let last = null;
    let text = "";
    for await (const chunk of client.GenerateText(request)) {
      if (chunk.text) {
        process.stdout.write(chunk.text);
        text += chunk.text;
      } else {
        last = chunk; // the last message: finish_reason and usage, no text
      }
    }
    if (process.stdout.isTTY && !text.endsWith("\n")) process.stdout.write("\n");
    if (last === null) {
      console.error("error: the stream ended without a finish reason");
      process.exitCode = 1;
      return;
    }
    const reason = last.finish_reason.replace("FINISH_REASON_", "").toLowerCase();
    const { prompt_tokens, completion_tokens } = last.usage;
    console.error(`finish_reason=${reason} prompt_tokens=${prompt_tokens} completion_tokens=${completion_tokens}`);
  } catch (error) {
    if (error.code === undefined || grpc.status[error.code] === undefined) throw error;
    console.error(`error: ${grpc.status[error.code]}: ${error.details}`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

await main();
