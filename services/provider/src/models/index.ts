// What the daemon knows about model files: the GGUF format, file hashes, and the synthesizer that
// writes test models of real architectures.
export * from "./gguf/index.js";
export { sha256File } from "./sha256-file.js";
export * from "./synth/index.js";
