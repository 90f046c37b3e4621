"""Would another weight encoding of the default GGUF prefill faster on this CPU? (issue 12)

The bundled Qwen2.5-Coder-0.5B GGUF mixes Q5_0 (most matrices), Q6_K and Q4_K (ffn_down) and
Q8_0 (the head). llama.cpp's CPU build picks a matrix-multiply kernel per type: tinyBLAS
(``LLAMAFILE``) for Q8_0/Q4_0/Q5_0, interleaved "repacked" kernels for Q4_0 and Q4_K on AVX2,
plain row dot products for Q6_K. This bench re-encodes the decoder's quantized matrices (the
token embedding and the head kept as shipped) to Q8_0 (near-lossless from Q5_0: an extra
rounding of at most 1/16 of a Q5_0 step) and to Q4_0 (lossy), then in one process, alternating
the files prompt by prompt:

- prefill tokens/s on RAG-length prompts (~700 tokens, one at a time, no prompt cache), read
  from llama.cpp's own timings;
- decode tokens/s (64 greedy tokens, one at a time);
- how far each encoding moves the model: mean and max |Δ log-prob| of the first answer token
  against the shipped file over the top-5 tokens, and the share of prompts whose greedy first
  token is the same.

    .venv/bin/python bench/requant_prefill.py [--rounds 3]

It changes nothing in the project: the re-encoded files live in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEEP = ("token_embd.weight", "output.weight")  # looked up / the head: kept as shipped


def reencode(src: Path, dest: Path, target: str) -> dict[str, int]:
    """Copy ``src`` to ``dest`` with every quantized decoder matrix re-encoded as ``target``
    (a ``GGMLQuantizationType`` name); returns how many tensors of each source type changed."""
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    kind = T[target]
    reader = gguf.GGUFReader(str(src))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(str(dest), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        value = field.contents()
        if field.name == "general.file_type":
            value = {"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                     "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[target].value
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    changed: dict[str, int] = {}
    tensors = []
    for t in reader.tensors:
        data, qtype = t.data, t.tensor_type
        if t.name not in KEEP and qtype not in (T.F32, T.F16, T.BF16, kind):
            changed[qtype.name] = changed.get(qtype.name, 0) + 1
            data = quants.quantize(quants.dequantize(t.data, qtype), kind)
            qtype = kind
        tensors.append((t.name, np.ascontiguousarray(data), qtype))
    for name, data, qtype in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data)
    writer.close()
    return changed


def main() -> None:
    import itertools

    from core.paths import default_store_dir
    from ingest.store import Store
    from models.backends import gguf_of
    from models.gen_llamacpp import LlamaCppGenerator
    from models.loading import load_tokenizer, resolve

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="prompts per file and measure")
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    args = p.parse_args()

    ref = resolve(args.model)
    tokenizer = load_tokenizer(ref)
    shipped = gguf_of(ref)
    assert shipped is not None
    tmp = Path(tempfile.mkdtemp(prefix="requant-"))
    files = {"shipped": shipped}
    for target in ("Q8_0", "Q4_0"):
        start = time.perf_counter()
        dest = tmp / f"{shipped.stem}.{target}.gguf"
        changed = reencode(shipped, dest, target)
        print(f"{target}: re-encoded {changed} in {time.perf_counter() - start:.1f} s, "
              f"{dest.stat().st_size / 1e6:.0f} MB (shipped {shipped.stat().st_size / 1e6:.0f})")
        files[target] = dest
    gens = {k: LlamaCppGenerator(f, tokenizer, name=k, parallel=1, progress=False)
            for k, f in files.items()}

    store = Store.open(default_store_dir())
    texts = [c.text for c in itertools.islice(store.iter_chunks(), 60)]  # real passages
    store.close()
    prompts = []
    for i in range(args.rounds):
        passages = "\n\n".join(texts[i * 3:(i + 1) * 3])
        prompts.append([{"role": "system", "content": "Responda só com a resposta mais curta."},
                        {"role": "user", "content": f"Contexto:\n{passages}\n\nPergunta: "
                         f"Quem é citado no trecho {i + 1}?"}])
    pre: dict[str, list[float]] = {k: [] for k in gens}
    dec: dict[str, list[float]] = {k: [] for k in gens}
    first: dict[str, list[dict[int, float]]] = {k: [] for k in gens}
    for prompt in prompts:
        for name, gen in gens.items():  # alternate: the files share the machine's load
            reply = gen.server().handle_chat_completions(
                {"messages": prompt, "max_tokens": 64, "temperature": 0.0, "top_k": 1,
                 "cache_prompt": False})  # llama.cpp's own timings are in the reply
            reply = json.loads(reply) if isinstance(reply, str) else reply
            pre[name].append(reply["timings"]["prompt_per_second"])
            dec[name].append(reply["timings"]["predicted_per_second"])
            first[name].append(gen.next_token_logprobs([prompt], top=5)[0])
    n_tokens = reply["timings"]["prompt_n"]
    print(f"\n{len(prompts)} RAG-length prompts (~{n_tokens} tokens), one at a time, "
          f"{gens['shipped'].threads} threads")
    base_pre, base_dec = statistics.median(pre["shipped"]), statistics.median(dec["shipped"])
    for name in gens:
        deltas, same = [], 0
        for mine, ref_ in zip(first[name], first["shipped"], strict=True):
            shared = mine.keys() & ref_.keys()
            deltas += [abs(mine[t] - ref_[t]) for t in shared]
            same += max(mine, key=mine.get) == max(ref_, key=ref_.get)
        p_med, d_med = statistics.median(pre[name]), statistics.median(dec[name])
        print(f"{name:8s} prefill {p_med:6.1f} tok/s ({p_med / base_pre:4.2f}x)  decode "
              f"{d_med:5.1f} tok/s ({d_med / base_dec:4.2f}x)"
              f"  |Δ logp| mean {np.mean(deltas):.3f} max {np.max(deltas):.3f}, "
              f"same first token {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
