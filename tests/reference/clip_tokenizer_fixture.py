"""Writes tests/fixtures/clip_tokenizer/: a CLIP BPE tokenizer (the vocabulary of OpenAI's CLIP
and OpenCLIP ViT-bigG, which the Würstchen prior's text encoder uses) saved by transformers as
tokenizer.json, and tokenize.json: ids and attention masks from transformers' CLIPTokenizerFast
(padding to 77, truncation) for captions with unicode, punctuation, numbers, long text and the
empty string.

The BPE merges come from OpenAI's CLIP package (MIT licence): pass the path of
bpe_simple_vocab_16e6.txt.gz, e.g. from the openai-clip sdist on PyPI:
    pip download --no-deps openai-clip==1.0.1 && tar xzf openai-clip-1.0.1.tar.gz
    python tests/reference/clip_tokenizer_fixture.py openai-clip-1.0.1/clip/bpe_simple_vocab_16e6.txt.gz
"""
import gzip
import json
import os
import sys
import tempfile

import transformers
from transformers import CLIPTokenizer, CLIPTokenizerFast

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "clip_tokenizer")
# The tokenizer itself ships with lora-train (the built-in demo model uses it).
TOKENIZER = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "clip-tokenizer")

CAPTIONS = [
    "a drawing of a green pokemon with red eyes",
    "An Emoji of a Dog Face: animal, pet, puppy!",
    "ÉMOJI — café, naïve façade; 東京タワー 🗼 and 😀😀",
    "numbers 1234567 and 3.14159, 42nd street, 2x4",
    "punctuation!!! ??? ... (parens) [brackets] {braces} 'quotes' \"double\" --dash-- a/b\\c",
    "   leading and trailing   whitespace\tand\ttabs\nnewline   ",
    "",
    " ".join(["a very long caption that keeps going"] * 20),
    "<|startoftext|> literal special tokens <|endoftext|>",
    "don't can't won't it's we're they've I'd",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def main(bpe_path):
    # CLIP's vocabulary as its SimpleTokenizer builds it: bytes, bytes + </w>, the first 48894
    # merges, then the two special tokens: 49408 entries.
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.json"), "w") as f:
            json.dump({v: i for i, v in enumerate(vocab)}, f)
        with open(os.path.join(tmp, "merges.txt"), "w") as f:
            f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        slow = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), pad_token="<|endoftext|>")
        fast = CLIPTokenizerFast(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), pad_token="<|endoftext|>")
        os.makedirs(OUT, exist_ok=True)
        fast.save_pretrained(TOKENIZER)
    for extra in ("vocab.json", "merges.txt"):  # tokenizer.json holds both
        path = os.path.join(TOKENIZER, extra)
        if os.path.exists(path):
            os.remove(path)
    cases = []
    for text in CAPTIONS:
        enc = fast(text, padding="max_length", max_length=77, truncation=True)
        slow_ids = slow(text, padding="max_length", max_length=77, truncation=True)["input_ids"]
        cases.append({"text": text, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "slow_agrees": slow_ids == enc["input_ids"]})
    with open(os.path.join(OUT, "tokenize.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "vocab_size": len(vocab), "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"wrote {OUT}: vocab {len(vocab)}, {len(cases)} captions, slow tokenizer agrees on {sum(c['slow_agrees'] for c in cases)}")


if __name__ == "__main__":
    main(sys.argv[1])
