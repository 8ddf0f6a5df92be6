"""MLX's own generation (mlx-lm) on a checkpoint, driven by `npm run bench:mlx` (tests/bench/mlx/).

The benchmark's reference for the MLX batching core: the same checkpoint and the same prompt token ids
through mlx-lm's own code, `generate_step` at batch 1 (what `mlx_lm.generate` runs) and `BatchGenerator`
above it (what `mlx_lm.server` batches with), greedy, stopping at the checkpoint's end-of-sequence ids
as the core does. It runs where `mlx` and `mlx_lm` import (a Mac with the wheels, or a local build);
nothing here installs or builds them.

Protocol (one JSON object per line): argv[1] is the checkpoint directory. After loading, the script
prints {"ready": true, "mlx": ..., "mlx_lm": ..., "device": ...}. Then each stdin line
{"prompts": [[id, ...], ...], "genTokens": N} is answered with {"rows": [...]} in prompt order, each row
{"promptTokens", "completionTokens", "startMs", "firstTokenMs", "lastTokenMs", "finishReason",
"tokenTimesMs", "tokens"}: milliseconds on this process's monotonic clock from the line's arrival (the
model's work, without the pipe), so the benchmark's arithmetic applies unchanged. Errors go to stderr
and exit 1.
"""

import json
import sys
import time
import types
from pathlib import Path


def import_mlx_lm():
    """mlx-lm's generation without its tokenizer and hub packages, which token ids and a local
    directory never reach: a missing `transformers` or `huggingface_hub` is stood in for by an empty
    module with the names mlx-lm imports (any use of them would fail loudly)."""

    def stand_in(name, attributes):
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)

            def unavailable(*_args, **_kwargs):
                raise RuntimeError(f"{name} is not installed; the benchmark uses token ids only")

            for attribute in attributes:
                # register: mlx-lm registers its own tokenizer classes at import (harmless to drop).
                methods = {"__init__": unavailable, "from_pretrained": classmethod(unavailable)}
                methods["register"] = classmethod(lambda *_args, **_kwargs: None)
                setattr(module, attribute, type(attribute, (), methods))
            module.snapshot_download = unavailable
            sys.modules[name] = module

    stand_in("transformers", ["AutoTokenizer", "PreTrainedTokenizer", "PreTrainedTokenizerFast"])
    stand_in("huggingface_hub", [])
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.generate import BatchGenerator, generate_step
    from mlx_lm.utils import load_model

    return mx, mlx_lm, BatchGenerator, generate_step, load_model


def eos_ids(directory):
    """The end-of-sequence ids the core stops at: config.json's and generation_config.json's."""
    ids = set()
    for name in ("config.json", "generation_config.json"):
        path = directory / name
        if not path.exists():
            continue
        value = json.loads(path.read_text()).get("eos_token_id")
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def row(prompt_tokens, start, times, tokens, reason):
    ms = [(t - start) * 1000 for t in times]
    return {
        "promptTokens": prompt_tokens,
        "completionTokens": len(tokens),
        "startMs": 0,
        "firstTokenMs": ms[0] if ms else None,
        "lastTokenMs": ms[-1] if ms else None,
        "finishReason": reason,
        "tokenTimesMs": ms,
        "tokens": tokens,
    }


def single(mx, generate_step, model, prompt, gen_tokens, stop):
    """Batch 1 as mlx_lm.generate runs it (an end-of-sequence id ends it and is not delivered)."""
    start = time.perf_counter()
    times, tokens, reason = [], [], "length"
    for token, _logprobs in generate_step(mx.array(prompt), model, max_tokens=gen_tokens):
        token = int(token)
        if token in stop:
            reason = "stop"
            break
        times.append(time.perf_counter())
        tokens.append(token)
    return [row(len(prompt), start, times, tokens, reason)]


def batched(BatchGenerator, model, prompts, gen_tokens, stop):
    """Every prompt at once through BatchGenerator, as mlx_lm.server batches concurrent requests."""
    start = time.perf_counter()
    generator = BatchGenerator(
        model,
        max_tokens=gen_tokens,
        stop_tokens=[[t] for t in sorted(stop)],
        completion_batch_size=max(len(prompts), 1),
        prefill_batch_size=max(len(prompts), 1),
    )
    uids = generator.insert(prompts, [gen_tokens] * len(prompts))
    times = {uid: [] for uid in uids}
    tokens = {uid: [] for uid in uids}
    reasons = {}
    try:
        while responses := generator.next_generated():
            at = time.perf_counter()
            for response in responses:
                if response.finish_reason != "stop":
                    times[response.uid].append(at)
                    tokens[response.uid].append(int(response.token))
                if response.finish_reason is not None:
                    reasons[response.uid] = response.finish_reason
    finally:
        generator.close()
    return [
        row(len(p), start, times[uid], tokens[uid], reasons.get(uid, "length")) for uid, p in zip(uids, prompts)
    ]


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: mlx_lm_generation.py CHECKPOINT_DIR\n")
        sys.exit(64)
    directory = Path(sys.argv[1])
    mx, mlx_lm, BatchGenerator, generate_step, load_model = import_mlx_lm()
    model, _config = load_model(directory)
    stop = eos_ids(directory)
    device = "gpu" if mx.default_device() == mx.gpu else "cpu"
    if device == "cpu":
        # The core computes in float32 on the CPU (MLX's CPU kernels for bfloat16 are far slower, and
        # float32 keeps its output the same at any batch size): mlx-lm on the same footing. The
        # quantized codes stay as they are; scales, biases and norms are cast.
        model.set_dtype(mx.float32)
    print(json.dumps({"ready": True, "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__, "device": device}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        prompts = [list(map(int, p)) for p in job["prompts"]]
        gen_tokens = int(job["genTokens"])
        if len(prompts) == 1:
            rows = single(mx, generate_step, model, prompts[0], gen_tokens, stop)
        else:
            rows = batched(BatchGenerator, model, prompts, gen_tokens, stop)
        print(json.dumps({"rows": rows}), flush=True)


if __name__ == "__main__":
    main()
