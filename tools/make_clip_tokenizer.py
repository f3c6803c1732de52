"""Derive CLIP's tokenizer files (vocab.json, merges.txt) from the BPE vocabulary.

The BPE file `bpe_simple_vocab_16e6.txt.gz` ships inside the open_clip_torch wheel; fetch it
without installing open_clip (which would pull in torchvision):

    pip download --no-deps open_clip_torch -d /tmp/oc
    unzip -o /tmp/oc/*.whl '*bpe_simple_vocab_16e6.txt.gz' -d /tmp/oc
    python tools/make_clip_tokenizer.py /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz

The derivation is the one CLIP's own SimpleTokenizer performs at start-up (openai/CLIP,
clip/simple_tokenizer.py): 256 byte symbols, the same with an end-of-word marker, one entry per
merge, then the two special tokens; 49,408 entries and 48,894 merges in all.
"""

import argparse
import gzip
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "gcpl" / "assets" / "clip-tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bpe_gz", type=Path)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()

    lines = gzip.open(args.bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_symbols = list(bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(merges) == 48894, (len(vocab), len(merges))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (args.out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (args.out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
