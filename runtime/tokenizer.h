// defines: herd_tokenizer, herd_tokenizer_load, herd_tokenizer_load_json, herd_tokenizer_free,
//          herd_tokenizer_save, herd_tokenizer_vocab_size, herd_tokenizer_token,
//          herd_tokenizer_token_id, herd_tokenizer_bos_id, herd_tokenizer_eos_id,
//          herd_tokenizer_encode, herd_tokenizer_decode, herd_tokenizer_train,
//          herd_chat_msg, herd_chat_tokens, herd_tokenizer_chat, herd_chat_tokens_free
//
// BPE with byte fallback in the Llama 2 flavour of the Hugging Face `tokenizer.json` format
// (doc/tokenizer.md): `▁` normalizer (Prepend + Replace, or a Metaspace pre-tokenizer), merges
// applied lowest rank first, characters outside the vocabulary spelled as `<0xNN>` byte tokens,
// added tokens (`<s>`, `</s>`, `<unk>`) split out of the raw text first (or, when marked
// `normalized: true` as in Meta's Llama 2 files, out of the normalized text), and the Replace /
// ByteFallback / Fuse / Strip decoder. Encodings equal the `tokenizers` library's, id for id.
// Also: training a new vocabulary on a corpus, and the Llama 2 chat template with a role for
// every token.
#ifndef HERD_TOKENIZER_H
#define HERD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct herd_tokenizer herd_tokenizer;

// Encode flags.
enum {
  HERD_TOK_BOS = 1,         // prepend the BOS token (`<s>`), as Llama's post-processor does
  HERD_TOK_EOS = 2,         // append the EOS token (`</s>`)
  HERD_TOK_NO_SPECIAL = 4,  // treat added-token text (`<s>` ...) inside the text as plain text
};
// Decode flags.
enum {
  HERD_TOK_SKIP_SPECIAL =
      1,  // drop special added tokens (what `tokenizers` decode does by default)
};

// Reads a tokenizer.json. Unsupported contents (another model type, a ByteLevel pre-tokenizer, an
// unknown normalizer or decoder, missing merges) fail with HERD_EINVAL naming the field; text
// that is not JSON with HERD_ECORRUPT; a missing file with HERD_ENOTFOUND.
int herd_tokenizer_load(herd_tokenizer **out, const char *path);
// The same from a JSON document in memory; `origin` names it in error messages.
int herd_tokenizer_load_json(herd_tokenizer **out, const char *json, size_t len,
                             const char *origin);
void herd_tokenizer_free(herd_tokenizer *tok);
// Writes the tokenizer as a Llama 2 style tokenizer.json that `tokenizers` and this loader read.
int herd_tokenizer_save(const herd_tokenizer *tok, const char *path);

int herd_tokenizer_vocab_size(const herd_tokenizer *tok);
// The string of token `id` (pieces use `▁` for spaces), or NULL when out of range.
const char *herd_tokenizer_token(const herd_tokenizer *tok, int id);
// The id of the token spelled `piece` (added tokens included), or -1.
int herd_tokenizer_token_id(const herd_tokenizer *tok, const char *piece);
int herd_tokenizer_bos_id(const herd_tokenizer *tok);  // -1 when the vocabulary has none
int herd_tokenizer_eos_id(const herd_tokenizer *tok);

// Encodes `len` bytes of UTF-8 `text` (HERD_EINVAL if not valid UTF-8). On success *ids is a
// malloc'd array of *n ids (NULL when *n == 0) that the caller frees with free().
int herd_tokenizer_encode(const herd_tokenizer *tok, const char *text, size_t len, int flags,
                          int32_t **ids, size_t *n);
// Decodes ids to a malloc'd NUL-terminated string (*len bytes without the NUL); caller frees.
// decode(encode(x)) == x for any text that does not contain added-token strings.
int herd_tokenizer_decode(const herd_tokenizer *tok, const int32_t *ids, size_t n, int flags,
                          char **text, size_t *len);

// Trains a byte-fallback BPE vocabulary of `vocab_size` tokens on `n_texts` UTF-8 strings: ids 0-2
// are `<unk>`, `<s>`, `</s>`, then the 256 `<0xNN>` byte tokens, then every character seen at
// least `min_frequency` times (most frequent first), then merges of the most frequent adjacent
// pair until the vocabulary is full or no pair is left. Words are `▁`-prefixed runs, as in
// SentencePiece, so no merge crosses a word start.
int herd_tokenizer_train(herd_tokenizer **out, const char *const *texts, size_t n_texts,
                         int vocab_size, int min_frequency);

// The Llama 2 chat template (Meta's llama/generation.py semantics, see doc/tokenizer.md).
enum herd_chat_role {
  HERD_ROLE_TEMPLATE = 0,  // BOS, [INST], [/INST], <<SYS>> scaffolding and separating spaces
  HERD_ROLE_SYSTEM = 1,
  HERD_ROLE_USER = 2,
  HERD_ROLE_ASSISTANT = 3,  // the answer, the space around it, and the EOS that ends it
};
typedef struct herd_chat_msg {
  int role;             // HERD_ROLE_SYSTEM (only as the first message), _USER or _ASSISTANT
  const char *content;  // UTF-8, NUL-terminated; leading/trailing whitespace is stripped
} herd_chat_msg;
typedef struct herd_chat_tokens {
  int32_t *ids;
  uint8_t *roles;  // enum herd_chat_role per token
  int32_t *msg;    // index into the messages of the token's message; template tokens carry
                   // the index of the user message of their turn
  size_t n;
} herd_chat_tokens;
// Messages: an optional system message, then user/assistant alternating, starting and ending
// with user (a final user turn without answer ends after `[/INST]`) or ending with assistant.
// Fills *out (free with herd_chat_tokens_free).
int herd_tokenizer_chat(const herd_tokenizer *tok, const herd_chat_msg *msgs, size_t n_msgs,
                        herd_chat_tokens *out);
void herd_chat_tokens_free(herd_chat_tokens *chat);

#endif
