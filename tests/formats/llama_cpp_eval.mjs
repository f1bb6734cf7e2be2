// Runs a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU build), for
// tests/formats/gguf_check.py:
//
//   node llama_cpp_eval.mjs NODE_MODULES MODEL.gguf REQUEST.json OUT.json
//
// REQUEST: {"tokens": [ids], "vocab": V, "prompt": TEXT, "generate": N}. OUT: {"logprobs": [one row of
// vocabulary log-probabilities per position of `tokens`, for the token after it],
// "prompt_tokens": llama.cpp's own tokenization of `prompt`, "continuation": the greedy
// continuation of `prompt` by N tokens, as token ids and text}.
import fs from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";

const [modules, modelPath, requestPath, outPath] = process.argv.slice(2);
const {getLlama} = await import(pathToFileURL(path.join(modules, "node-llama-cpp", "dist", "index.js")).href);
const request = JSON.parse(fs.readFileSync(requestPath, "utf8"));

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const vocab = request.vocab;
const context = await model.createContext({contextSize: model.trainContextSize, batchSize: 512, sequences: 2});

// Every position's next-token distribution: temperature 1 and no top-k/top-p/min-p cut, the
// model's own softmax over the whole vocabulary.
const sequence = context.getSequence();
const results = await sequence.controlledEvaluate(request.tokens.map((t) =>
    [t, {generateNext: {probabilities: true, options: {temperature: 1, topK: 0, topP: 1, minP: 0}}}]));
const logprobs = results.map((r) => {
  const row = new Array(vocab).fill(-Infinity);
  for (const [token, p] of r.next.probabilities) row[token] = Math.log(p);
  return row;
});
sequence.dispose();

// The prompt as llama.cpp tokenizes it, and its greedy continuation.
const promptTokens = model.tokenize(request.prompt);
const greedy = context.getSequence();
const generated = [];
let input = promptTokens;
for (let i = 0; i < request.generate; i++) {
  const out = await greedy.controlledEvaluate(input.map((t, k) =>
      k === input.length - 1 ? [t, {generateNext: {token: true, options: {temperature: 0}}}] : t));
  const next = out[input.length - 1].next.token;
  generated.push(next);
  input = [next];
}
const clean = (row) => row.map((x) => (Number.isFinite(x) ? x : -1e30));
fs.writeFileSync(outPath, JSON.stringify({
  logprobs: logprobs.map(clean), vocab,
  prompt_tokens: Array.from(promptTokens),
  continuation: {tokens: generated, text: model.detokenize(generated)},
}));
await context.dispose();
await model.dispose();
await llama.dispose();
