"""Writes a tiny llama model with random weights as GGUF (PyPI `gguf`), for the generation
test: 2 layers, 256-wide, 4 query heads of 64 and 2 KV heads (grouped-query attention),
SwiGLU feed-forward of 512, and a SentencePiece-style vocabulary of 3 control tokens, the
256 byte tokens and a few hundred English words. The weights are drawn from a fixed seed, so
every run writes the same file.

    python make_model.py OUT.gguf {f16,q8_0}
"""

import sys

import gguf
import numpy as np

N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF, N_CTX = 256, 2, 4, 2, 512, 512
HEAD_DIM = N_EMBD // N_HEAD

WORDS = """the of and to in is was that for on as with by he at from his it an were are which
this be or has had first one their its new after who they have her she two been other when
there all during into school time may years more most only over city some world would where
later up such used many can state about national out known university united then made
through same any these government became both under family part year while team three game
than between well early did work season being season them well long life also before each
house music back because own day still found around local area people high city band name
small light water river road under open north south east west great old young good green
blue red white black gold stone wind fire cloud rain snow star moon sun sea hill tree bird
fish horse dog cat song story book word voice hand heart eye door window garden village""".split()


def vocab():
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(6)  # byte
    # SentencePiece tokenizes by merging adjacent pieces into longer pieces of the
    # vocabulary, best score first, so every prefix of a word is a piece too: the word-start
    # marker and the letters, then "\u2581t", "\u2581th", "\u2581the" (longer scores better).
    pieces = {"\u2581": -10.0}
    for c in "abcdefghijklmnopqrstuvwxyz":
        pieces[c] = -10.0
    for w in WORDS:
        word = "\u2581" + w
        for n in range(2, len(word) + 1):
            pieces[word[:n]] = float(n)
    for piece, score in sorted(pieces.items()):
        tokens.append(piece)
        scores.append(score)
        types.append(1)  # normal
    return tokens, scores, types


def main():
    out, kind = sys.argv[1], sys.argv[2]
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[kind]
    rng = np.random.default_rng(20261130)
    tokens, scores, types = vocab()
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(out, "llama")
    w.add_name(f"vgpu-tiny-llama-{kind}")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(1 if kind == "f16" else 7)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    def matrix(name, rows, cols, scale=1.0):
        # numpy shape (rows, cols) is ggml's ne = [cols, rows]: `cols` inputs per output row.
        a = (rng.standard_normal((rows, cols)) * (np.reshape(scale, (-1, 1)) / np.sqrt(cols))).astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    def norm(name):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32))

    kv = N_HEAD_KV * HEAD_DIM
    matrix("token_embd.weight", n_vocab, N_EMBD, scale=np.sqrt(N_EMBD))
    for i in range(N_LAYER):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", N_EMBD, N_EMBD, scale=2.0)
        matrix(f"blk.{i}.attn_k.weight", kv, N_EMBD, scale=2.0)
        matrix(f"blk.{i}.attn_v.weight", kv, N_EMBD)
        matrix(f"blk.{i}.attn_output.weight", N_EMBD, N_EMBD)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD)
        matrix(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD)
        matrix(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)
    norm("output_norm.weight")
    # The output rows of whole words are larger, so that greedy decoding mostly says words
    # (random weights would otherwise pick byte tokens and word prefixes as often).
    words = {"\u2581" + w for w in WORDS}
    matrix("output.weight", n_vocab, N_EMBD, scale=np.array([4.0 if t in words else 1.0 for t in tokens]))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out}: tiny llama, {kind}, vocabulary {n_vocab}")


main()
