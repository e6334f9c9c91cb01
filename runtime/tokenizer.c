// defines: the BPE tokenizer declared in tokenizer.h (loader, encoder, decoder, trainer, chat)
//
// Layout: an id -> string table, an open-addressing hash from string to id, an open-addressing
// hash from a pair of ids to (rank, merged id), and the added tokens. Encoding follows the
// `tokenizers` library step by step: split added tokens out of the raw text (leftmost, longest),
// normalize each remaining piece (Prepend `▁`, Replace ` ` by `▁`), split `normalized: true` added
// tokens out of that by their normalized content (`▁<s>`), one BPE word per piece
// (no pre-tokenizer) or per `▁`-word (Metaspace with split), characters to ids with byte
// fallback, then merges from a binary heap ordered by (rank, position).
#include "tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

#define SPACE_MARK "\xe2\x96\x81"  // U+2581 `▁`
#define SPACE_MARK_LEN 3

// ---------------------------------------------------------------------------------------------
// small growable vectors

typedef struct {
  int32_t *v;
  size_t n, cap;
} ivec;

static int ivec_push(ivec *a, int32_t x) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = x;
  return 0;
}

typedef struct {
  char *s;
  size_t n, cap;
} sbuf;

static int sbuf_add(sbuf *b, const char *s, size_t len) {
  if (b->n + len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + len + 1) cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->n, s, len);
  b->n += len;
  b->s[b->n] = 0;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// UTF-8

// Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid (strict: no
// overlongs, no surrogates, at most U+10FFFF).
static int utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  int len;
  unsigned min;
  if ((c & 0xE0) == 0xC0) {
    len = 2;
    min = 0x80;
    c &= 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    min = 0x800;
    c &= 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    min = 0x10000;
    c &= 0x07;
  } else {
    return 0;
  }
  if ((size_t)len > n) return 0;
  for (int i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  return len;
}

static bool utf8_valid(const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    int l = utf8_len((const unsigned char *)s + i, n - i);
    if (!l) return false;
    i += (size_t)l;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// hashing

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

static size_t pow2_at_least(size_t n) {
  size_t c = 16;
  while (c < n) c *= 2;
  return c;
}

// ---------------------------------------------------------------------------------------------
// the tokenizer

typedef struct {
  char *content;
  size_t len;
  int32_t id;
  bool special, lstrip, rstrip, normalized, single_word;
  // normalized: true with a normalizer: the token is matched in the normalized text, as the
  // normalized form of its content (`pat`, e.g. `▁<s>` under Prepend); NULL otherwise
  char *pat;
  size_t pat_len;
} added_token;

typedef struct {
  uint64_t key;  // a << 32 | b; UINT64_MAX = empty
  int32_t rank, id;
} merge_slot;

struct herd_tokenizer {
  int n_vocab;
  char **tok;  // id -> NUL-terminated string (NULL for holes, which the loader rejects)
  uint32_t *tok_len;
  int32_t *vslot;  // string -> id, open addressing; -1 empty
  size_t vcap;
  merge_slot *mslot;  // pair -> (rank, new id)
  size_t mcap, n_merges;
  int32_t *merge_a, *merge_b;  // by rank, for saving
  added_token *added;
  int n_added;
  int n_added_norm;  // added tokens matched in the normalized text (pat != NULL)
  int32_t unk_id, bos_id, eos_id;
  int32_t byte_id[256];  // `<0xNN>` ids or -1
  bool byte_fallback, fuse_unk, ignore_merges;
  // normalizer / pre-tokenizer
  bool prepend;      // prepend `▁` to every non-empty piece (Prepend normalizer)
  bool replace;      // replace ` ` by `▁`
  int meta_prepend;  // Metaspace: 0 never, 1 always, 2 first
  bool meta;         // Metaspace pre-tokenizer present
  bool meta_split;   // Metaspace splits into `▁`-words
  int strip_start;   // decoder: leading spaces stripped
};

static int vocab_find(const herd_tokenizer *t, const char *s, size_t n) {
  if (!t->vcap) return -1;
  size_t mask = t->vcap - 1, i = hash_bytes(s, n) & mask;
  for (;;) {
    int32_t id = t->vslot[i];
    if (id < 0) return -1;
    if (t->tok_len[id] == n && memcmp(t->tok[id], s, n) == 0) return id;
    i = (i + 1) & mask;
  }
}

static void vocab_insert_slot(herd_tokenizer *t, int32_t id) {
  size_t mask = t->vcap - 1, i = hash_bytes(t->tok[id], t->tok_len[id]) & mask;
  while (t->vslot[i] >= 0) i = (i + 1) & mask;
  t->vslot[i] = id;
}

static int vocab_rebuild(herd_tokenizer *t) {
  free(t->vslot);
  t->vcap = pow2_at_least((size_t)t->n_vocab * 2 + 1);
  t->vslot = malloc(t->vcap * sizeof *t->vslot);
  if (!t->vslot) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  for (size_t i = 0; i < t->vcap; i++) t->vslot[i] = -1;
  for (int id = 0; id < t->n_vocab; id++) {
    if (t->tok[id] && vocab_find(t, t->tok[id], t->tok_len[id]) < 0) vocab_insert_slot(t, id);
  }
  return 0;
}

static const merge_slot *merge_find(const herd_tokenizer *t, int32_t a, int32_t b) {
  if (!t->mcap) return NULL;
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  size_t mask = t->mcap - 1, i = hash_u64(key) & mask;
  for (;;) {
    const merge_slot *s = &t->mslot[i];
    if (s->key == UINT64_MAX) return NULL;
    if (s->key == key) return s;
    i = (i + 1) & mask;
  }
}

// Builds the pair table from merge_a/merge_b (first occurrence of a pair keeps its rank).
static int merges_index(herd_tokenizer *t) {
  free(t->mslot);
  t->mcap = pow2_at_least(t->n_merges * 2 + 1);
  t->mslot = malloc(t->mcap * sizeof *t->mslot);
  if (!t->mslot) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  for (size_t i = 0; i < t->mcap; i++) t->mslot[i].key = UINT64_MAX;
  char *buf = NULL;
  size_t bufcap = 0;
  for (size_t r = 0; r < t->n_merges; r++) {
    int32_t a = t->merge_a[r], b = t->merge_b[r];
    size_t la = t->tok_len[a], lb = t->tok_len[b];
    if (la + lb > bufcap) {
      bufcap = (la + lb) * 2;
      char *p = realloc(buf, bufcap);
      if (!p) {
        free(buf);
        return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
      }
      buf = p;
    }
    memcpy(buf, t->tok[a], la);
    memcpy(buf + la, t->tok[b], lb);
    int nid = vocab_find(t, buf, la + lb);
    if (nid < 0) {
      int rc = herd_seterr(HERD_EINVAL,
                           "tokenizer: model.merges[%zu] \"%s %s\": merged token not in "
                           "the vocabulary",
                           r, t->tok[a], t->tok[b]);
      free(buf);
      return rc;
    }
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = t->mcap - 1, i = hash_u64(key) & mask;
    while (t->mslot[i].key != UINT64_MAX && t->mslot[i].key != key) i = (i + 1) & mask;
    if (t->mslot[i].key == UINT64_MAX) {
      t->mslot[i].key = key;
      t->mslot[i].rank = (int32_t)r;
      t->mslot[i].id = nid;
    }
  }
  free(buf);
  return 0;
}

static void byte_ids_index(herd_tokenizer *t) {
  for (int b = 0; b < 256; b++) {
    char s[8];
    snprintf(s, sizeof s, "<0x%02X>", b);
    t->byte_id[b] = vocab_find(t, s, 6);
  }
}

void herd_tokenizer_free(herd_tokenizer *t) {
  if (!t) return;
  for (int i = 0; i < t->n_vocab; i++) free(t->tok[i]);
  free(t->tok);
  free(t->tok_len);
  free(t->vslot);
  free(t->mslot);
  free(t->merge_a);
  free(t->merge_b);
  for (int i = 0; i < t->n_added; i++) {
    free(t->added[i].content);
    free(t->added[i].pat);
  }
  free(t->added);
  free(t);
}

static herd_tokenizer *tok_alloc(void) {
  herd_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->unk_id = t->bos_id = t->eos_id = -1;
  return t;
}

static int set_token(herd_tokenizer *t, int id, const char *s, size_t n, const char *origin) {
  if (id < 0 || id >= t->n_vocab)
    return herd_seterr(HERD_EINVAL, "%s: token id %d out of range", origin, id);
  if (t->tok[id]) {
    if (t->tok_len[id] == n && memcmp(t->tok[id], s, n) == 0) return 0;
    return herd_seterr(HERD_EINVAL, "%s: token id %d used twice (\"%s\")", origin, id, t->tok[id]);
  }
  t->tok[id] = malloc(n + 1);
  if (!t->tok[id]) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  memcpy(t->tok[id], s, n);
  t->tok[id][n] = 0;
  t->tok_len[id] = (uint32_t)n;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// loading

static bool is_str(json_t *v, const char *s) {
  return json_is_string(v) && !strcmp(json_string_value(v), s);
}

static bool is_space_mark(json_t *v) {
  return is_str(v, SPACE_MARK);
}

// normalizer: null, Prepend("▁"), Replace(" ", "▁") or a Sequence of those.
static int parse_normalizer(herd_tokenizer *t, json_t *n, const char *origin, const char *field) {
  if (!n || json_is_null(n)) return 0;
  json_t *type = json_object_get(n, "type");
  if (is_str(type, "Sequence")) {
    json_t *arr = json_object_get(n, "normalizers");
    if (!json_is_array(arr))
      return herd_seterr(HERD_EINVAL, "%s: %s.normalizers must be an array", origin, field);
    for (size_t i = 0; i < json_array_size(arr); i++) {
      char sub[64];
      snprintf(sub, sizeof sub, "normalizer.normalizers[%zu]", i);
      int rc = parse_normalizer(t, json_array_get(arr, i), origin, sub);
      if (rc) return rc;
    }
    return 0;
  }
  if (is_str(type, "Prepend")) {
    if (!is_space_mark(json_object_get(n, "prepend")))
      return herd_seterr(HERD_EINVAL, "%s: %s: only Prepend(\"\u2581\") is supported", origin,
                         field);
    if (t->replace)
      return herd_seterr(HERD_EINVAL, "%s: %s: Prepend after Replace is not supported", origin,
                         field);
    t->prepend = true;
    return 0;
  }
  if (is_str(type, "Replace")) {
    json_t *pat = json_object_get(n, "pattern");
    if (!is_str(json_object_get(pat, "String"), " ") ||
        !is_space_mark(json_object_get(n, "content")))
      return herd_seterr(HERD_EINVAL, "%s: %s: only Replace(\" \", \"\u2581\") is supported",
                         origin, field);
    t->replace = true;
    return 0;
  }
  return herd_seterr(HERD_EINVAL, "%s: %s: unsupported normalizer type %s", origin, field,
                     json_is_string(type) ? json_string_value(type) : "(missing)");
}

static int parse_pretokenizer(herd_tokenizer *t, json_t *p, const char *origin) {
  if (!p || json_is_null(p)) return 0;
  json_t *type = json_object_get(p, "type");
  if (is_str(type, "Metaspace")) {
    if (!is_space_mark(json_object_get(p, "replacement")))
      return herd_seterr(HERD_EINVAL, "%s: pre_tokenizer.replacement must be \"\u2581\"", origin);
    t->meta = true;
    json_t *scheme = json_object_get(p, "prepend_scheme");
    json_t *aps = json_object_get(p, "add_prefix_space");
    if (is_str(scheme, "always"))
      t->meta_prepend = 1;
    else if (is_str(scheme, "first"))
      t->meta_prepend = 2;
    else if (is_str(scheme, "never"))
      t->meta_prepend = 0;
    else if (json_is_boolean(aps))
      t->meta_prepend = json_is_true(aps) ? 1 : 0;
    else if (!scheme)
      t->meta_prepend = 1;
    else
      return herd_seterr(HERD_EINVAL, "%s: pre_tokenizer.prepend_scheme unsupported", origin);
    json_t *split = json_object_get(p, "split");
    t->meta_split = split ? json_is_true(split) : true;
    return 0;
  }
  return herd_seterr(HERD_EINVAL, "%s: pre_tokenizer: unsupported type %s (only null or Metaspace)",
                     origin, json_is_string(type) ? json_string_value(type) : "(missing)");
}

static int parse_decoder_one(herd_tokenizer *t, json_t *d, const char *origin, const char *field) {
  json_t *type = json_object_get(d, "type");
  if (is_str(type, "Replace")) {
    if (!is_space_mark(json_object_get(json_object_get(d, "pattern"), "String")) ||
        !is_str(json_object_get(d, "content"), " "))
      return herd_seterr(HERD_EINVAL, "%s: %s: only Replace(\"\u2581\", \" \") is supported",
                         origin, field);
    return 0;
  }
  if (is_str(type, "ByteFallback") || is_str(type, "Fuse")) return 0;
  if (is_str(type, "Strip")) {
    json_t *stop = json_object_get(d, "stop");
    if (!is_str(json_object_get(d, "content"), " ") || (stop && json_integer_value(stop) != 0))
      return herd_seterr(HERD_EINVAL, "%s: %s: only Strip(\" \", start, 0) is supported", origin,
                         field);
    t->strip_start = (int)json_integer_value(json_object_get(d, "start"));
    return 0;
  }
  if (is_str(type, "Metaspace")) {
    json_t *scheme = json_object_get(d, "prepend_scheme");
    json_t *aps = json_object_get(d, "add_prefix_space");
    t->strip_start = is_str(scheme, "never") || (aps && json_is_false(aps)) ? 0 : 1;
    return 0;
  }
  return herd_seterr(HERD_EINVAL, "%s: %s: unsupported decoder type %s", origin, field,
                     json_is_string(type) ? json_string_value(type) : "(missing)");
}

static int parse_decoder(herd_tokenizer *t, json_t *d, const char *origin) {
  if (!d || json_is_null(d)) return 0;
  if (is_str(json_object_get(d, "type"), "Sequence")) {
    json_t *arr = json_object_get(d, "decoders");
    if (!json_is_array(arr))
      return herd_seterr(HERD_EINVAL, "%s: decoder.decoders must be an array", origin);
    for (size_t i = 0; i < json_array_size(arr); i++) {
      char sub[64];
      snprintf(sub, sizeof sub, "decoder.decoders[%zu]", i);
      int rc = parse_decoder_one(t, json_array_get(arr, i), origin, sub);
      if (rc) return rc;
    }
    return 0;
  }
  return parse_decoder_one(t, d, origin, "decoder");
}

static int parse_merge(herd_tokenizer *t, json_t *m, size_t r, const char *origin) {
  const char *a, *b;
  size_t la, lb;
  if (json_is_string(m)) {
    const char *s = json_string_value(m);
    const char *sp = strchr(s, ' ');
    if (!sp || strchr(sp + 1, ' '))
      return herd_seterr(HERD_EINVAL, "%s: model.merges[%zu] \"%s\" is not \"a b\"", origin, r, s);
    a = s;
    la = (size_t)(sp - s);
    b = sp + 1;
    lb = strlen(b);
  } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
             json_is_string(json_array_get(m, 1))) {
    a = json_string_value(json_array_get(m, 0));
    la = json_string_length(json_array_get(m, 0));
    b = json_string_value(json_array_get(m, 1));
    lb = json_string_length(json_array_get(m, 1));
  } else {
    return herd_seterr(HERD_EINVAL, "%s: model.merges[%zu] must be \"a b\" or [a, b]", origin, r);
  }
  int ia = vocab_find(t, a, la), ib = vocab_find(t, b, lb);
  if (ia < 0 || ib < 0)
    return herd_seterr(HERD_EINVAL, "%s: model.merges[%zu]: \"%.*s\" not in the vocabulary", origin,
                       r, ia < 0 ? (int)la : (int)lb, ia < 0 ? a : b);
  t->merge_a[r] = ia;
  t->merge_b[r] = ib;
  return 0;
}

// Added tokens with `normalized: true` are matched, as in `tokenizers`, in the normalized text
// against their normalized content: under Llama 2's normalizer `<s>` becomes `▁<s>`, so it is
// found only at the start of the text or after a space. Without a normalizer (the Metaspace form)
// normalizing is the identity and such tokens are matched in the raw text like the others.
static int added_patterns(herd_tokenizer *t, const char *origin) {
  t->n_added_norm = 0;
  for (int i = 0; i < t->n_added; i++) {
    added_token *a = &t->added[i];
    free(a->pat);
    a->pat = NULL;
    a->pat_len = 0;
    if (!a->normalized || !(t->prepend || t->replace)) continue;
    if (a->lstrip || a->rstrip || a->single_word)
      return herd_seterr(HERD_EINVAL,
                         "%s: added_tokens[%d]: normalized=true with lstrip, rstrip or "
                         "single_word is not supported",
                         origin, i);
    sbuf p = {0};
    int rc = t->prepend ? sbuf_add(&p, SPACE_MARK, SPACE_MARK_LEN) : 0;
    for (size_t j = 0; j < a->len && !rc; j++) {
      if (t->replace && a->content[j] == ' ')
        rc = sbuf_add(&p, SPACE_MARK, SPACE_MARK_LEN);
      else
        rc = sbuf_add(&p, a->content + j, 1);
    }
    if (rc) {
      free(p.s);
      return rc;
    }
    a->pat = p.s;
    a->pat_len = p.n;
    t->n_added_norm++;
  }
  return 0;
}

static int load_root(herd_tokenizer *t, json_t *root, const char *origin) {
  if (!json_is_object(root)) return herd_seterr(HERD_EINVAL, "%s: not a JSON object", origin);
  json_t *model = json_object_get(root, "model");
  if (!json_is_object(model)) return herd_seterr(HERD_EINVAL, "%s: model missing", origin);
  json_t *type = json_object_get(model, "type");
  json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
  if (type && !is_str(type, "BPE"))
    return herd_seterr(HERD_EINVAL, "%s: model.type %s is not supported (only BPE)", origin,
                       json_is_string(type) ? json_string_value(type) : "(not a string)");
  if (!json_is_object(vocab))
    return herd_seterr(HERD_EINVAL, "%s: model.vocab missing or not an object", origin);
  if (!json_is_array(merges))
    return herd_seterr(HERD_EINVAL, "%s: model.merges missing or not an array", origin);
  if (!json_is_true(json_object_get(model, "byte_fallback")))
    return herd_seterr(HERD_EINVAL, "%s: model.byte_fallback must be true (Llama-style BPE)",
                       origin);
  json_t *v = json_object_get(model, "dropout");
  if (v && !json_is_null(v) && json_number_value(v) != 0.0)
    return herd_seterr(HERD_EINVAL, "%s: model.dropout is not supported", origin);
  v = json_object_get(model, "continuing_subword_prefix");
  if (v && !json_is_null(v) && !is_str(v, ""))
    return herd_seterr(HERD_EINVAL, "%s: model.continuing_subword_prefix is not supported", origin);
  v = json_object_get(model, "end_of_word_suffix");
  if (v && !json_is_null(v) && !is_str(v, ""))
    return herd_seterr(HERD_EINVAL, "%s: model.end_of_word_suffix is not supported", origin);
  t->byte_fallback = true;
  t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
  t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));

  json_t *added = json_object_get(root, "added_tokens");
  if (added && !json_is_null(added) && !json_is_array(added))
    return herd_seterr(HERD_EINVAL, "%s: added_tokens must be an array", origin);
  // vocabulary size: largest id + 1
  int max_id = -1;
  const char *key;
  json_t *val;
  json_object_foreach(vocab, key, val) {
    if (!json_is_integer(val) || json_integer_value(val) < 0 ||
        json_integer_value(val) > INT32_MAX / 2)
      return herd_seterr(HERD_EINVAL, "%s: model.vocab[\"%s\"] is not a valid id", origin, key);
    if (json_integer_value(val) > max_id) max_id = (int)json_integer_value(val);
  }
  size_t na = added ? json_array_size(added) : 0;
  for (size_t i = 0; i < na; i++) {
    json_t *a = json_array_get(added, i), *id = json_object_get(a, "id");
    if (!json_is_integer(id) || !json_is_string(json_object_get(a, "content")) ||
        json_integer_value(id) < 0 || json_integer_value(id) > INT32_MAX / 2)
      return herd_seterr(HERD_EINVAL, "%s: added_tokens[%zu] needs an id and a content", origin, i);
    if (json_integer_value(id) > max_id) max_id = (int)json_integer_value(id);
  }
  if ((size_t)max_id >= json_object_size(vocab) + na)
    return herd_seterr(HERD_EINVAL, "%s: model.vocab ids are not 0..n-1 (largest id %d)", origin,
                       max_id);
  t->n_vocab = max_id + 1;
  t->tok = calloc((size_t)t->n_vocab + 1, sizeof *t->tok);
  t->tok_len = calloc((size_t)t->n_vocab + 1, sizeof *t->tok_len);
  t->added = calloc(na + 1, sizeof *t->added);
  if (!t->tok || !t->tok_len || !t->added)
    return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  json_object_foreach(vocab, key, val) {
    int rc = set_token(t, (int)json_integer_value(val), key, strlen(key), origin);
    if (rc) return rc;
  }
  for (size_t i = 0; i < na; i++) {
    json_t *a = json_array_get(added, i);
    json_t *c = json_object_get(a, "content");
    added_token *at = &t->added[t->n_added];
    at->len = json_string_length(c);
    if (at->len == 0)
      return herd_seterr(HERD_EINVAL, "%s: added_tokens[%zu].content is empty", origin, i);
    at->content = malloc(at->len + 1);
    if (!at->content) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
    memcpy(at->content, json_string_value(c), at->len + 1);
    t->n_added++;
    at->id = (int32_t)json_integer_value(json_object_get(a, "id"));
    at->special = json_is_true(json_object_get(a, "special"));
    at->lstrip = json_is_true(json_object_get(a, "lstrip"));
    at->rstrip = json_is_true(json_object_get(a, "rstrip"));
    at->single_word = json_is_true(json_object_get(a, "single_word"));
    at->normalized = json_is_true(json_object_get(a, "normalized"));
    int rc = set_token(t, at->id, at->content, at->len, origin);
    if (rc) return rc;
  }
  for (int id = 0; id < t->n_vocab; id++)
    if (!t->tok[id])
      return herd_seterr(HERD_EINVAL, "%s: model.vocab has no token with id %d", origin, id);
  int rc = vocab_rebuild(t);
  if (rc) return rc;

  t->n_merges = json_array_size(merges);
  t->merge_a = malloc((t->n_merges + 1) * sizeof *t->merge_a);
  t->merge_b = malloc((t->n_merges + 1) * sizeof *t->merge_b);
  if (!t->merge_a || !t->merge_b) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  for (size_t r = 0; r < t->n_merges; r++) {
    rc = parse_merge(t, json_array_get(merges, r), r, origin);
    if (rc) return rc;
  }
  rc = merges_index(t);
  if (rc) return rc;
  byte_ids_index(t);

  json_t *unk = json_object_get(model, "unk_token");
  if (json_is_string(unk))
    t->unk_id = vocab_find(t, json_string_value(unk), json_string_length(unk));
  t->bos_id = vocab_find(t, "<s>", 3);
  t->eos_id = vocab_find(t, "</s>", 4);

  if (!json_object_get(root, "normalizer") && !json_object_get(root, "pre_tokenizer"))
    return herd_seterr(HERD_EINVAL, "%s: normalizer missing", origin);
  rc = parse_normalizer(t, json_object_get(root, "normalizer"), origin, "normalizer");
  if (rc) return rc;
  rc = parse_pretokenizer(t, json_object_get(root, "pre_tokenizer"), origin);
  if (rc) return rc;
  if (t->meta && (t->prepend || t->replace))
    return herd_seterr(HERD_EINVAL, "%s: normalizer and Metaspace pre_tokenizer both add \u2581",
                       origin);
  if (!t->meta && !t->replace)
    return herd_seterr(HERD_EINVAL, "%s: normalizer must replace \" \" by \"\u2581\" (Llama style)",
                       origin);
  if ((rc = added_patterns(t, origin))) return rc;
  rc = parse_decoder(t, json_object_get(root, "decoder"), origin);
  if (rc) return rc;
  json_t *pp = json_object_get(root, "post_processor");
  if (pp && !json_is_null(pp) && !is_str(json_object_get(pp, "type"), "TemplateProcessing"))
    return herd_seterr(HERD_EINVAL, "%s: post_processor: only TemplateProcessing is supported",
                       origin);
  return 0;
}

int herd_tokenizer_load_json(herd_tokenizer **out, const char *json, size_t len,
                             const char *origin) {
  *out = NULL;
  if (!origin) origin = "tokenizer.json";
  json_error_t err;
  json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
  if (!root)
    return herd_seterr(HERD_ECORRUPT, "%s: invalid JSON at line %d: %s", origin, err.line,
                       err.text);
  herd_tokenizer *t = tok_alloc();
  if (!t) {
    json_decref(root);
    return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  }
  int rc = load_root(t, root, origin);
  json_decref(root);
  if (rc) {
    herd_tokenizer_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

int herd_tokenizer_load(herd_tokenizer **out, const char *path) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f)
    return herd_seterr(errno == ENOENT ? HERD_ENOTFOUND : HERD_EIO, "%s: %s", path,
                       strerror(errno));
  sbuf b = {0};
  char chunk[65536];
  size_t got;
  int rc = 0;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if ((rc = sbuf_add(&b, chunk, got))) break;
  }
  if (!rc && ferror(f)) rc = herd_seterr(HERD_EIO, "%s: read error", path);
  fclose(f);
  if (!rc) rc = herd_tokenizer_load_json(out, b.s ? b.s : "", b.n, path);
  free(b.s);
  return rc;
}

int herd_tokenizer_vocab_size(const herd_tokenizer *t) {
  return t->n_vocab;
}
const char *herd_tokenizer_token(const herd_tokenizer *t, int id) {
  return id >= 0 && id < t->n_vocab ? t->tok[id] : NULL;
}
int herd_tokenizer_token_id(const herd_tokenizer *t, const char *piece) {
  return vocab_find(t, piece, strlen(piece));
}
int herd_tokenizer_bos_id(const herd_tokenizer *t) {
  return t->bos_id;
}
int herd_tokenizer_eos_id(const herd_tokenizer *t) {
  return t->eos_id;
}

// ---------------------------------------------------------------------------------------------
// BPE on one word

typedef struct {
  int32_t id;
  int32_t prev, next;   // -1 at the ends
  uint32_t start, len;  // byte range in the normalized word
} symbol;

typedef struct {
  int32_t rank, pos, new_id;
} hitem;

static bool hless(hitem x, hitem y) {
  return x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos);
}

typedef struct {
  symbol *sym;
  size_t nsym, symcap;
  hitem *heap;
  size_t nheap, heapcap;
} bpe_work;

static int heap_push(bpe_work *w, hitem it) {
  if (w->nheap == w->heapcap) {
    size_t cap = w->heapcap ? w->heapcap * 2 : 64;
    hitem *h = realloc(w->heap, cap * sizeof *h);
    if (!h) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
    w->heap = h;
    w->heapcap = cap;
  }
  size_t i = w->nheap++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!hless(it, w->heap[p])) break;
    w->heap[i] = w->heap[p];
    i = p;
  }
  w->heap[i] = it;
  return 0;
}

static hitem heap_pop(bpe_work *w) {
  hitem top = w->heap[0], last = w->heap[--w->nheap];
  size_t i = 0, n = w->nheap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && hless(w->heap[c + 1], w->heap[c])) c++;
    if (!hless(w->heap[c], last)) break;
    w->heap[i] = w->heap[c];
    i = c;
  }
  if (n) w->heap[i] = last;
  return top;
}

static int sym_push(bpe_work *w, int32_t id, uint32_t start, uint32_t len) {
  if (w->nsym == w->symcap) {
    size_t cap = w->symcap ? w->symcap * 2 : 64;
    symbol *s = realloc(w->sym, cap * sizeof *s);
    if (!s) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
    w->sym = s;
    w->symcap = cap;
  }
  symbol *s = &w->sym[w->nsym];
  s->id = id;
  s->start = start;
  s->len = len;
  s->prev = (int32_t)w->nsym - 1;
  s->next = -1;
  if (w->nsym) w->sym[w->nsym - 1].next = (int32_t)w->nsym;
  w->nsym++;
  return 0;
}

static int try_pair(const herd_tokenizer *t, bpe_work *w, int32_t pos) {
  if (pos < 0) return 0;
  int32_t nx = w->sym[pos].next;
  if (nx < 0) return 0;
  const merge_slot *m = merge_find(t, w->sym[pos].id, w->sym[nx].id);
  if (!m) return 0;
  return heap_push(w, (hitem){m->rank, pos, m->id});
}

// Tokenizes one normalized word s[0..n); appends ids and byte spans [start, end) within s.
static int bpe_word(const herd_tokenizer *t, bpe_work *w, const char *s, size_t n, ivec *ids,
                    ivec *spans) {
  int rc;
  if (n == 0) return 0;
  if (t->ignore_merges) {
    int id = vocab_find(t, s, n);
    if (id >= 0) {
      if ((rc = ivec_push(ids, id))) return rc;
      if (spans && ((rc = ivec_push(spans, 0)) || (rc = ivec_push(spans, (int32_t)n)))) return rc;
      return 0;
    }
  }
  w->nsym = 0;
  w->nheap = 0;
  size_t i = 0;
  while (i < n) {
    int l = utf8_len((const unsigned char *)s + i, n - i);
    if (!l) l = 1;  // cannot happen: input is validated
    int id = vocab_find(t, s + i, (size_t)l);
    if (id >= 0) {
      rc = sym_push(w, id, (uint32_t)i, (uint32_t)l);
    } else {
      bool all = true;
      for (int k = 0; k < l; k++) all = all && t->byte_id[(unsigned char)s[i + k]] >= 0;
      if (all) {
        rc = 0;
        for (int k = 0; k < l && !rc; k++)
          rc = sym_push(w, t->byte_id[(unsigned char)s[i + k]], (uint32_t)(i + k), 1);
      } else if (t->unk_id < 0) {
        return herd_seterr(HERD_EINVAL,
                           "tokenizer: character not in the vocabulary and no unk token");
      } else if (t->fuse_unk && w->nsym && w->sym[w->nsym - 1].id == t->unk_id) {
        w->sym[w->nsym - 1].len += (uint32_t)l;
        rc = 0;
      } else {
        rc = sym_push(w, t->unk_id, (uint32_t)i, (uint32_t)l);
      }
    }
    if (rc) return rc;
    i += (size_t)l;
  }
  for (size_t k = 0; k + 1 < w->nsym; k++)
    if ((rc = try_pair(t, w, (int32_t)k))) return rc;
  while (w->nheap) {
    hitem top = heap_pop(w);
    symbol *a = &w->sym[top.pos];
    if (a->len == 0 || a->next < 0) continue;
    symbol *b = &w->sym[a->next];
    const merge_slot *m = merge_find(t, a->id, b->id);
    if (!m || m->id != top.new_id) continue;
    a->id = top.new_id;
    a->len += b->len;
    a->next = b->next;
    b->len = 0;
    if (a->next >= 0) w->sym[a->next].prev = top.pos;
    if ((rc = try_pair(t, w, a->prev)) || (rc = try_pair(t, w, top.pos))) return rc;
  }
  for (int32_t k = 0; k >= 0 && (size_t)k < w->nsym; k = w->sym[k].next) {
    if ((rc = ivec_push(ids, w->sym[k].id))) return rc;
    if (spans && ((rc = ivec_push(spans, (int32_t)w->sym[k].start)) ||
                  (rc = ivec_push(spans, (int32_t)(w->sym[k].start + w->sym[k].len)))))
      return rc;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// encoding

// Normalizes text[0..n) (a piece between added tokens, starting at `orig` in the input) into
// *norm, with the input offset of every normalized byte in *map (-1 for an inserted `▁`).
static int normalize_piece(const herd_tokenizer *t, const char *s, size_t n, int32_t orig,
                           bool first, sbuf *norm, ivec *map) {
  int rc;
  norm->n = 0;
  map->n = 0;
  if (n == 0) return sbuf_add(norm, "", 0);
  bool pre = t->prepend;
  if (t->meta) {
    pre = t->meta_prepend == 1 || (t->meta_prepend == 2 && first);
    // Metaspace does not prepend before a leading `▁` (a replaced space or a literal one)
    if (pre && (s[0] == ' ' || (n >= SPACE_MARK_LEN && !memcmp(s, SPACE_MARK, SPACE_MARK_LEN))))
      pre = false;
  }
  if (pre) {
    if ((rc = sbuf_add(norm, SPACE_MARK, SPACE_MARK_LEN))) return rc;
    for (int k = 0; k < SPACE_MARK_LEN; k++)
      if ((rc = ivec_push(map, -1))) return rc;
  }
  bool rep = t->replace || t->meta;
  for (size_t i = 0; i < n; i++) {
    if (rep && s[i] == ' ') {
      rc = sbuf_add(norm, SPACE_MARK, SPACE_MARK_LEN);
      for (int k = 0; k < SPACE_MARK_LEN && !rc; k++) rc = ivec_push(map, orig + (int32_t)i);
    } else {
      rc = sbuf_add(norm, s + i, 1);
      if (!rc) rc = ivec_push(map, orig + (int32_t)i);
    }
    if (rc) return rc;
  }
  return 0;
}

static bool is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
static bool is_word(unsigned char c) {
  return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
}

// Finds the leftmost-longest added token in s[from..n); returns its index or -1 and sets the
// match range [*ms, *me) (lstrip/rstrip widen it over whitespace). `norm` selects the tokens
// matched in normalized text (by their normalized content) instead of those matched in raw text.
static int find_added(const herd_tokenizer *t, const char *s, size_t n, size_t from, bool norm,
                      size_t *ms, size_t *me) {
  for (size_t i = from; i < n; i++) {
    int best = -1;
    size_t best_len = 0;
    for (int k = 0; k < t->n_added; k++) {
      const added_token *a = &t->added[k];
      if ((a->pat != NULL) != norm) continue;
      const char *c = norm ? a->pat : a->content;
      size_t cl = norm ? a->pat_len : a->len;
      if (cl > n - i || memcmp(s + i, c, cl) != 0) continue;
      if (a->single_word && ((i > 0 && is_word((unsigned char)s[i - 1])) ||
                             (i + cl < n && is_word((unsigned char)s[i + cl]))))
        continue;
      if (best < 0 || cl > best_len) {
        best = k;
        best_len = cl;
      }
    }
    if (best >= 0) {
      const added_token *a = &t->added[best];
      size_t b = i, e = i + best_len;
      if (a->lstrip)
        while (b > from && is_ws((unsigned char)s[b - 1])) b--;
      if (a->rstrip)
        while (e < n && is_ws((unsigned char)s[e])) e++;
      *ms = b;
      *me = e;
      return best;
    }
  }
  return -1;
}

// BPE over the normalized bytes norm[b..e): one word, or one per `▁`-word with Metaspace split;
// appends ids and, with `spans`, the input byte range of each token (via `map`).
static int encode_words(const herd_tokenizer *t, bpe_work *w, const sbuf *norm, const ivec *map,
                        size_t b, size_t e, ivec *ids, ivec *spans, ivec *wspans) {
  int rc = 0;
  size_t wb = b;
  while (!rc && wb < e) {
    size_t we = e;
    if (t->meta && t->meta_split) {  // words start at each `▁`
      we = wb + 1;
      while (we < e &&
             !(we + SPACE_MARK_LEN <= e && !memcmp(norm->s + we, SPACE_MARK, SPACE_MARK_LEN)))
        we++;
    }
    size_t before = ids->n;
    wspans->n = 0;
    rc = bpe_word(t, w, norm->s + wb, we - wb, ids, spans ? wspans : NULL);
    for (size_t j = 0; spans && !rc && j < ids->n - before; j++) {
      int32_t s0 = -1, e0 = -1;
      for (int32_t x = wspans->v[2 * j]; x < wspans->v[2 * j + 1]; x++) {
        int32_t o = map->v[wb + (size_t)x];
        if (o < 0) continue;
        if (s0 < 0 || o < s0) s0 = o;
        if (o + 1 > e0) e0 = o + 1;
      }
      if (!(rc = ivec_push(spans, s0))) rc = ivec_push(spans, e0);
    }
    wb = we;
  }
  return rc;
}

// The encoder behind encode and chat: ids, and when `spans` is given, for every token the range
// [start, end) of input bytes it covers (both -1 for a token made only of an inserted `▁`).
static int encode_core(const herd_tokenizer *t, const char *text, size_t len, int flags, ivec *ids,
                       ivec *spans) {
  if (len > (size_t)INT32_MAX / 4) return herd_seterr(HERD_EINVAL, "tokenizer: text too long");
  if (!utf8_valid(text, len)) return herd_seterr(HERD_EINVAL, "tokenizer: text is not valid UTF-8");
  int rc = 0;
  if (flags & HERD_TOK_BOS) {
    if (t->bos_id < 0) return herd_seterr(HERD_EINVAL, "tokenizer: no BOS token <s>");
    if ((rc = ivec_push(ids, t->bos_id))) return rc;
    if (spans && ((rc = ivec_push(spans, -1)) || (rc = ivec_push(spans, -1)))) return rc;
  }
  sbuf norm = {0};
  ivec map = {0}, wspans = {0};
  bpe_work w = {0};
  size_t pos = 0;
  bool first = true;
  bool split = !(flags & HERD_TOK_NO_SPECIAL);
  while (pos <= len && !rc) {
    size_t ms = len, me = len;
    int k = split ? find_added(t, text, len, pos, false, &ms, &me) : -1;
    // the plain piece [pos, ms), normalized; then normalized added tokens split out of it
    rc = normalize_piece(t, text + pos, ms - pos, (int32_t)pos, first, &norm, &map);
    first = false;
    size_t q = 0;
    while (!rc) {
      size_t ns = norm.n, ne = norm.n;
      int k2 = split && t->n_added_norm ? find_added(t, norm.s, norm.n, q, true, &ns, &ne) : -1;
      rc = encode_words(t, &w, &norm, &map, q, ns, ids, spans, &wspans);
      if (rc || k2 < 0) break;
      if ((rc = ivec_push(ids, t->added[k2].id))) break;
      if (spans) {
        int32_t s0 = -1, e0 = -1;
        for (size_t b = ns; b < ne; b++) {
          int32_t o = map.v[b];
          if (o < 0) continue;
          if (s0 < 0 || o < s0) s0 = o;
          if (o + 1 > e0) e0 = o + 1;
        }
        if (!(rc = ivec_push(spans, s0))) rc = ivec_push(spans, e0);
      }
      q = ne;
    }
    if (rc || k < 0) break;
    if ((rc = ivec_push(ids, t->added[k].id))) break;
    if (spans && ((rc = ivec_push(spans, (int32_t)ms)) || (rc = ivec_push(spans, (int32_t)me))))
      break;
    pos = me;
  }
  if (!rc && (flags & HERD_TOK_EOS)) {
    if (t->eos_id < 0)
      rc = herd_seterr(HERD_EINVAL, "tokenizer: no EOS token </s>");
    else if (!(rc = ivec_push(ids, t->eos_id)) && spans) {
      if (!(rc = ivec_push(spans, -1))) rc = ivec_push(spans, -1);
    }
  }
  free(norm.s);
  free(map.v);
  free(wspans.v);
  free(w.sym);
  free(w.heap);
  return rc;
}

int herd_tokenizer_encode(const herd_tokenizer *t, const char *text, size_t len, int flags,
                          int32_t **ids, size_t *n) {
  *ids = NULL;
  *n = 0;
  if (!text && len) return herd_seterr(HERD_EINVAL, "tokenizer: NULL text");
  ivec v = {0};
  int rc = encode_core(t, text ? text : "", len, flags, &v, NULL);
  if (rc) {
    free(v.v);
    return rc;
  }
  *ids = v.v;
  *n = v.n;
  if (!v.n) {
    free(v.v);
    *ids = NULL;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// decoding

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int byte_token_value(const char *s, size_t n) {
  if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
  int h = hexval(s[3]), l = hexval(s[4]);
  return h < 0 || l < 0 ? -1 : h * 16 + l;
}

static int flush_bytes(sbuf *out, const char *bytes, size_t nb) {
  if (!nb) return 0;
  if (utf8_valid(bytes, nb)) return sbuf_add(out, bytes, nb);
  int rc = 0;
  for (size_t i = 0; i < nb && !rc; i++) rc = sbuf_add(out, "\xef\xbf\xbd", 3);  // U+FFFD each
  return rc;
}

static bool is_special_id(const herd_tokenizer *t, int32_t id) {
  for (int k = 0; k < t->n_added; k++)
    if (t->added[k].id == id && t->added[k].special) return true;
  return false;
}

int herd_tokenizer_decode(const herd_tokenizer *t, const int32_t *ids, size_t n, int flags,
                          char **text, size_t *len) {
  *text = NULL;
  if (len) *len = 0;
  sbuf out = {0}, bytes = {0};
  int rc = sbuf_add(&out, "", 0);
  for (size_t i = 0; i < n && !rc; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= t->n_vocab) {
      rc = herd_seterr(HERD_EINVAL, "tokenizer: decode: id %d at %zu out of range [0, %d)", id, i,
                       t->n_vocab);
      break;
    }
    if ((flags & HERD_TOK_SKIP_SPECIAL) && is_special_id(t, id)) continue;
    const char *s = t->tok[id];
    size_t sl = t->tok_len[id];
    int bv = byte_token_value(s, sl);
    if (bv >= 0) {
      char c = (char)bv;
      rc = sbuf_add(&bytes, &c, 1);
      continue;
    }
    rc = flush_bytes(&out, bytes.s, bytes.n);
    bytes.n = 0;
    for (size_t j = 0; j < sl && !rc;) {
      if (j + SPACE_MARK_LEN <= sl && !memcmp(s + j, SPACE_MARK, SPACE_MARK_LEN)) {
        rc = sbuf_add(&out, " ", 1);
        j += SPACE_MARK_LEN;
      } else {
        rc = sbuf_add(&out, s + j, 1);
        j++;
      }
    }
  }
  if (!rc) rc = flush_bytes(&out, bytes.s, bytes.n);
  free(bytes.s);
  if (rc) {
    free(out.s);
    return rc;
  }
  size_t cut = 0;
  while ((int)cut < t->strip_start && cut < out.n && out.s[cut] == ' ') cut++;
  memmove(out.s, out.s + cut, out.n - cut + 1);
  *text = out.s;
  if (len) *len = out.n - cut;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// saving

static int json_set(json_t *obj, const char *key, json_t *v) {
  if (!v || json_object_set_new(obj, key, v))
    return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  return 0;
}

static json_t *added_json(const added_token *a) {
  return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (int)a->id, "content", a->content,
                   "single_word", a->single_word, "lstrip", a->lstrip, "rstrip", a->rstrip,
                   "normalized", a->normalized, "special", a->special);
}

int herd_tokenizer_save(const herd_tokenizer *t, const char *path) {
  json_t *root = json_object(), *vocab = json_object(), *merges = json_array(),
         *added = json_array();
  int rc = (!root || !vocab || !merges || !added)
               ? herd_seterr(HERD_ENOMEM, "tokenizer: out of memory")
               : 0;
  for (int id = 0; id < t->n_vocab && !rc; id++)
    if (json_object_set_new(vocab, t->tok[id], json_integer(id)))
      rc = herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  for (size_t r = 0; r < t->n_merges && !rc; r++) {
    sbuf m = {0};
    const char *a = t->tok[t->merge_a[r]], *b = t->tok[t->merge_b[r]];
    json_t *item;
    if (strchr(a, ' ') || strchr(b, ' ')) {
      item = json_pack("[s, s]", a, b);
    } else {
      rc = sbuf_add(&m, a, strlen(a));
      if (!rc) rc = sbuf_add(&m, " ", 1);
      if (!rc) rc = sbuf_add(&m, b, strlen(b));
      item = rc ? NULL : json_string(m.s);
    }
    free(m.s);
    if (!rc && (!item || json_array_append_new(merges, item)))
      rc = herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  }
  for (int k = 0; k < t->n_added && !rc; k++)
    if (json_array_append_new(added, added_json(&t->added[k])))
      rc = herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  if (rc) {
    json_decref(root);
    json_decref(vocab);
    json_decref(merges);
    json_decref(added);
    return rc;
  }
  json_t *normalizer, *pre, *decoder;
  if (t->meta) {
    normalizer = json_null();
    pre = json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", SPACE_MARK,
                    "prepend_scheme",
                    t->meta_prepend == 1   ? "always"
                    : t->meta_prepend == 2 ? "first"
                                           : "never",
                    "split", t->meta_split);
  } else {
    normalizer = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence",
                           "normalizers", "type", "Prepend", "prepend", SPACE_MARK, "type",
                           "Replace", "pattern", "String", " ", "content", SPACE_MARK);
    if (normalizer && !t->prepend) json_array_remove(json_object_get(normalizer, "normalizers"), 0);
    pre = json_null();
  }
  decoder = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type",
                      "Sequence", "decoders", "type", "Replace", "pattern", "String", SPACE_MARK,
                      "content", " ", "type", "ByteFallback", "type", "Fuse", "type", "Strip",
                      "content", " ", "start", t->strip_start, "stop", 0);
  json_t *post = json_null();
  if (t->bos_id >= 0)
    post = json_pack(
        "{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, "
        "{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
        "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", "<s>", "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", "<s>", "type_id", 1, "Sequence",
        "id", "B", "type_id", 1, "special_tokens", "<s>", "id", "<s>", "ids", (int)t->bos_id,
        "tokens", "<s>");
  json_t *model =
      json_pack("{s:s, s:n, s:s?, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                "unk_token", t->unk_id >= 0 ? t->tok[t->unk_id] : NULL, "continuing_subword_prefix",
                "end_of_word_suffix", "fuse_unk", t->fuse_unk, "byte_fallback", t->byte_fallback,
                "ignore_merges", t->ignore_merges, "vocab", vocab, "merges", merges);
  if ((rc = json_set(root, "version", json_string("1.0"))) ||
      (rc = json_set(root, "truncation", json_null())) ||
      (rc = json_set(root, "padding", json_null())) ||
      (rc = json_set(root, "added_tokens", added)) ||
      (rc = json_set(root, "normalizer", normalizer)) ||
      (rc = json_set(root, "pre_tokenizer", pre)) ||
      (rc = json_set(root, "post_processor", post)) || (rc = json_set(root, "decoder", decoder)) ||
      (rc = json_set(root, "model", model))) {
    json_decref(root);
    return rc;
  }
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (!text) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  rc = herd_write_text_atomic(path, text);
  free(text);
  return rc;
}

// ---------------------------------------------------------------------------------------------
// training

typedef struct {
  char *s;  // normalized word
  size_t len;
  int64_t count;
  int32_t *sym;
  size_t nsym;
} tword;

static int cmp_str(const void *x, const void *y) {
  const sbuf *a = x, *b = y;
  size_t n = a->n < b->n ? a->n : b->n;
  int c = memcmp(a->s, b->s, n);
  return c ? c : (a->n > b->n) - (a->n < b->n);
}

typedef struct {
  char s[5];
  int len;
  int64_t count;
} tchar;

static int cmp_tchar(const void *x, const void *y) {
  const tchar *a = x, *b = y;
  if (a->count != b->count) return a->count > b->count ? -1 : 1;
  int c = memcmp(a->s, b->s, 4);
  return c;
}

typedef struct {
  uint64_t key;
  int64_t count;
} pslot;

static int add_token(herd_tokenizer *t, const char *s, size_t n) {
  char **tk = realloc(t->tok, ((size_t)t->n_vocab + 1) * sizeof *tk);
  if (!tk) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  t->tok = tk;
  uint32_t *tl = realloc(t->tok_len, ((size_t)t->n_vocab + 1) * sizeof *tl);
  if (!tl) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  t->tok_len = tl;
  t->tok[t->n_vocab] = NULL;
  t->n_vocab++;
  int rc = set_token(t, t->n_vocab - 1, s, n, "tokenizer: train");
  if (rc) return rc;
  if ((size_t)t->n_vocab * 2 + 1 > t->vcap) return vocab_rebuild(t);
  vocab_insert_slot(t, t->n_vocab - 1);
  return 0;
}

static int train_body(herd_tokenizer *t, const char *const *texts, size_t n_texts, int vocab_size,
                      int min_frequency, sbuf **wordsp, size_t *nwp, tword **twp, size_t *ntwp) {
  int rc;
  // 1. specials, bytes
  static const char *specials[3] = {"<unk>", "<s>", "</s>"};
  t->added = calloc(3, sizeof *t->added);
  if (!t->added) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  for (int k = 0; k < 3; k++) {
    if ((rc = add_token(t, specials[k], strlen(specials[k])))) return rc;
    added_token *a = &t->added[k];
    a->len = strlen(specials[k]);
    a->content = strdup(specials[k]);
    if (!a->content) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
    a->id = k;
    a->special = true;
    t->n_added++;
  }
  t->unk_id = 0;
  t->bos_id = 1;
  t->eos_id = 2;
  for (int b = 0; b < 256; b++) {
    char s[8];
    snprintf(s, sizeof s, "<0x%02X>", b);
    if ((rc = add_token(t, s, 6))) return rc;
  }
  // 2. words: normalized texts split before every `▁`
  sbuf norm = {0};
  ivec map = {0};
  size_t nw = 0, capw = 0;
  sbuf *words = NULL;
  rc = 0;
  for (size_t i = 0; i < n_texts && !rc; i++) {
    size_t len = strlen(texts[i]);
    if (!utf8_valid(texts[i], len)) {
      rc = herd_seterr(HERD_EINVAL, "tokenizer: train: text %zu is not valid UTF-8", i);
      break;
    }
    if ((rc = normalize_piece(t, texts[i], len, 0, true, &norm, &map))) break;
    size_t b = 0;
    while (b < norm.n && !rc) {
      size_t e = b + SPACE_MARK_LEN;
      while (e < norm.n &&
             !(e + SPACE_MARK_LEN <= norm.n && !memcmp(norm.s + e, SPACE_MARK, SPACE_MARK_LEN)))
        e++;
      if (e > norm.n) e = norm.n;
      if (nw == capw) {
        capw = capw ? capw * 2 : 1024;
        sbuf *p = realloc(words, capw * sizeof *p);
        if (!p) {
          rc = herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
          break;
        }
        words = p;
      }
      words[nw] = (sbuf){0};
      rc = sbuf_add(&words[nw], norm.s + b, e - b);
      nw++;
      b = e;
    }
  }
  free(norm.s);
  free(map.v);
  *wordsp = words;
  *nwp = nw;
  if (rc) return rc;
  qsort(words, nw, sizeof *words, cmp_str);
  tword *tw = calloc(nw + 1, sizeof *tw);
  if (!tw) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  *twp = tw;
  size_t ntw = 0;
  for (size_t i = 0; i < nw; i++) {
    if (ntw && tw[ntw - 1].len == words[i].n && !memcmp(tw[ntw - 1].s, words[i].s, words[i].n)) {
      tw[ntw - 1].count++;
    } else {
      tw[ntw].s = words[i].s;
      tw[ntw].len = words[i].n;
      tw[ntw].count = 1;
      ntw++;
    }
  }
  *ntwp = ntw;
  // 3. characters, counted by code point
  int64_t *cp = calloc(0x110000, sizeof *cp);
  if (!cp) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  size_t nch = 0;
  for (size_t i = 0; i < ntw; i++) {
    for (size_t j = 0; j < tw[i].len;) {
      const unsigned char *u = (const unsigned char *)tw[i].s + j;
      int l = utf8_len(u, tw[i].len - j);
      uint32_t c = l == 1   ? u[0]
                   : l == 2 ? (u[0] & 0x1Fu) << 6 | (u[1] & 0x3Fu)
                   : l == 3 ? (u[0] & 0x0Fu) << 12 | (u[1] & 0x3Fu) << 6 | (u[2] & 0x3Fu)
                            : (u[0] & 0x07u) << 18 | (u[1] & 0x3Fu) << 12 | (u[2] & 0x3Fu) << 6 |
                                  (u[3] & 0x3Fu);
      if (!cp[c]) nch++;
      cp[c] += tw[i].count;
      j += (size_t)l;
    }
  }
  tchar *ch = calloc(nch + 1, sizeof *ch);
  if (!ch) {
    free(cp);
    return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  }
  nch = 0;
  for (uint32_t c = 0; c < 0x110000; c++) {
    if (!cp[c]) continue;
    tchar *x = &ch[nch++];
    x->count = cp[c];
    if (c < 0x80) {
      x->s[0] = (char)c;
      x->len = 1;
    } else if (c < 0x800) {
      x->s[0] = (char)(0xC0 | c >> 6);
      x->s[1] = (char)(0x80 | (c & 0x3F));
      x->len = 2;
    } else if (c < 0x10000) {
      x->s[0] = (char)(0xE0 | c >> 12);
      x->s[1] = (char)(0x80 | (c >> 6 & 0x3F));
      x->s[2] = (char)(0x80 | (c & 0x3F));
      x->len = 3;
    } else {
      x->s[0] = (char)(0xF0 | c >> 18);
      x->s[1] = (char)(0x80 | (c >> 12 & 0x3F));
      x->s[2] = (char)(0x80 | (c >> 6 & 0x3F));
      x->s[3] = (char)(0x80 | (c & 0x3F));
      x->len = 4;
    }
  }
  free(cp);
  qsort(ch, nch, sizeof *ch, cmp_tchar);
  for (size_t k = 0; k < nch && t->n_vocab < vocab_size && !rc; k++) {
    if (ch[k].count < min_frequency) break;
    if (vocab_find(t, ch[k].s, (size_t)ch[k].len) < 0)
      rc = add_token(t, ch[k].s, (size_t)ch[k].len);
  }
  free(ch);
  if (rc) return rc;
  int32_t first_merge_id = 3 + 256;  // bytes and specials never merge
  // 4. symbols of each word
  for (size_t i = 0; i < ntw; i++) {
    tw[i].sym = malloc((tw[i].len + 1) * sizeof *tw[i].sym);
    if (!tw[i].sym) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
    for (size_t j = 0; j < tw[i].len;) {
      int l = utf8_len((const unsigned char *)tw[i].s + j, tw[i].len - j);
      int id = vocab_find(t, tw[i].s + j, (size_t)l);
      if (id >= 0) {
        tw[i].sym[tw[i].nsym++] = id;
      } else {
        for (int k = 0; k < l; k++) tw[i].sym[tw[i].nsym++] = 3 + (unsigned char)tw[i].s[j + k];
      }
      j += (size_t)l;
    }
  }
  // 5. merges
  size_t pcap = 0;
  pslot *ps = NULL;
  size_t mcap = 0;
  char *buf = NULL;
  size_t bufcap = 0;
  while (t->n_vocab < vocab_size && !rc) {
    size_t need = 16;
    for (size_t i = 0; i < ntw; i++) need += tw[i].nsym;
    need = pow2_at_least(need * 2);
    if (need > pcap) {
      free(ps);
      ps = malloc(need * sizeof *ps);
      if (!ps) {
        rc = herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
        break;
      }
      pcap = need;
    }
    for (size_t i = 0; i < pcap; i++) ps[i].key = UINT64_MAX;
    uint64_t best = UINT64_MAX;
    int64_t bestc = 0;
    for (size_t i = 0; i < ntw; i++) {
      for (size_t j = 0; j + 1 < tw[i].nsym; j++) {
        int32_t a = tw[i].sym[j], b = tw[i].sym[j + 1];
        if (a < first_merge_id || b < first_merge_id) continue;
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        size_t mask = pcap - 1, h = hash_u64(key) & mask;
        while (ps[h].key != UINT64_MAX && ps[h].key != key) h = (h + 1) & mask;
        if (ps[h].key == UINT64_MAX) {
          ps[h].key = key;
          ps[h].count = 0;
        }
        ps[h].count += tw[i].count;
        if (ps[h].count > bestc || (ps[h].count == bestc && key < best)) {
          bestc = ps[h].count;
          best = key;
        }
      }
    }
    if (best == UINT64_MAX || bestc < min_frequency) break;
    int32_t a = (int32_t)(best >> 32), b = (int32_t)(best & 0xffffffffu);
    size_t la = t->tok_len[a], lb = t->tok_len[b];
    if (la + lb > bufcap) {
      bufcap = (la + lb) * 2;
      char *p = realloc(buf, bufcap);
      if (!p) {
        rc = herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
        break;
      }
      buf = p;
    }
    memcpy(buf, t->tok[a], la);
    memcpy(buf + la, t->tok[b], lb);
    int32_t nid = vocab_find(t, buf, la + lb);
    if (nid < 0) {
      if ((rc = add_token(t, buf, la + lb))) break;
      nid = t->n_vocab - 1;
    }
    if (t->n_merges == mcap) {
      mcap = mcap ? mcap * 2 : 256;
      int32_t *pa = realloc(t->merge_a, mcap * sizeof *pa);
      if (pa) t->merge_a = pa;
      int32_t *pb = realloc(t->merge_b, mcap * sizeof *pb);
      if (pb) t->merge_b = pb;
      if (!pa || !pb) {
        rc = herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
        break;
      }
    }
    t->merge_a[t->n_merges] = a;
    t->merge_b[t->n_merges] = b;
    t->n_merges++;
    for (size_t i = 0; i < ntw; i++) {
      size_t o = 0;
      for (size_t j = 0; j < tw[i].nsym; j++) {
        if (j + 1 < tw[i].nsym && tw[i].sym[j] == a && tw[i].sym[j + 1] == b) {
          tw[i].sym[o++] = nid;
          j++;
        } else {
          tw[i].sym[o++] = tw[i].sym[j];
        }
      }
      tw[i].nsym = o;
    }
  }
  free(ps);
  free(buf);
  if (rc) return rc;
  if ((rc = merges_index(t))) return rc;
  byte_ids_index(t);
  return 0;
}

int herd_tokenizer_train(herd_tokenizer **out, const char *const *texts, size_t n_texts,
                         int vocab_size, int min_frequency) {
  *out = NULL;
  if (vocab_size < 3 + 256 + 1)
    return herd_seterr(HERD_EINVAL,
                       "tokenizer: train: vocab_size %d < 260 (3 specials + 256 bytes + 1)",
                       vocab_size);
  if (min_frequency < 1) min_frequency = 1;
  if (!texts && n_texts) return herd_seterr(HERD_EINVAL, "tokenizer: train: NULL corpus");
  for (size_t i = 0; i < n_texts; i++)
    if (!texts[i]) return herd_seterr(HERD_EINVAL, "tokenizer: train: text %zu is NULL", i);
  herd_tokenizer *t = tok_alloc();
  if (!t) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
  t->byte_fallback = true;
  t->fuse_unk = true;
  t->prepend = t->replace = true;
  t->strip_start = 1;
  sbuf *words = NULL;
  tword *tw = NULL;
  size_t nw = 0, ntw = 0;
  int rc = train_body(t, texts, n_texts, vocab_size, min_frequency, &words, &nw, &tw, &ntw);
  for (size_t i = 0; i < nw; i++) free(words[i].s);
  free(words);
  for (size_t i = 0; i < ntw; i++) free(tw[i].sym);
  free(tw);
  if (rc) {
    herd_tokenizer_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// the Llama 2 chat template

#define B_INST "[INST]"
#define E_INST "[/INST]"
#define B_SYS "<<SYS>>\n"
#define E_SYS "\n<</SYS>>\n\n"

typedef struct {
  sbuf text;
  ivec owner;  // per byte: role << 24 | message index
} piece_buf;

static int piece_add(piece_buf *p, const char *s, size_t n, int role, int msg) {
  int rc = sbuf_add(&p->text, s, n);
  for (size_t i = 0; i < n && !rc; i++) rc = ivec_push(&p->owner, (int32_t)role << 24 | msg);
  return rc;
}

// Python's str.strip() for ASCII whitespace (and \x1c-\x1f, which Python also strips).
static void strip_range(const char *s, size_t *b, size_t *e) {
  while (*b < *e && (is_ws((unsigned char)s[*b]) || (s[*b] >= 0x1c && s[*b] <= 0x1f))) (*b)++;
  while (*e > *b && (is_ws((unsigned char)s[*e - 1]) || (s[*e - 1] >= 0x1c && s[*e - 1] <= 0x1f)))
    (*e)--;
}

static int chat_push(herd_chat_tokens *c, size_t *cap, int32_t id, int role, int msg) {
  if (c->n == *cap) {
    size_t nc = *cap ? *cap * 2 : 256;
    int32_t *ids = realloc(c->ids, nc * sizeof *ids);
    if (ids) c->ids = ids;
    uint8_t *roles = realloc(c->roles, nc * sizeof *roles);
    if (roles) c->roles = roles;
    int32_t *msg_ = realloc(c->msg, nc * sizeof *msg_);
    if (msg_) c->msg = msg_;
    if (!ids || !roles || !msg_) return herd_seterr(HERD_ENOMEM, "tokenizer: out of memory");
    *cap = nc;
  }
  c->ids[c->n] = id;
  c->roles[c->n] = (uint8_t)role;
  c->msg[c->n] = msg;
  c->n++;
  return 0;
}

void herd_chat_tokens_free(herd_chat_tokens *c) {
  if (!c) return;
  free(c->ids);
  free(c->roles);
  free(c->msg);
  memset(c, 0, sizeof *c);
}

// One turn: BOS + encode("[INST] {prompt} [/INST] {answer} ") + EOS, or, without answer,
// BOS + encode("[INST] {prompt} [/INST]"), exactly as Meta's chat_completion.
static int chat_turn(const herd_tokenizer *t, const herd_chat_msg *msgs, int sys, int user,
                     int answer, herd_chat_tokens *c, size_t *cap) {
  piece_buf p = {0};
  ivec ids = {0}, spans = {0};
  int rc = piece_add(&p, B_INST " ", strlen(B_INST) + 1, HERD_ROLE_TEMPLATE, user);
  // Meta: content = B_SYS + system + E_SYS + user, then content.strip()
  const char *us = msgs[user].content;
  size_t ub = 0, ue = strlen(us);
  if (sys >= 0) {
    const char *ss = msgs[sys].content;
    size_t sb = 0, se = strlen(ss);
    if (!rc) rc = piece_add(&p, B_SYS, strlen(B_SYS), HERD_ROLE_TEMPLATE, user);
    if (!rc) rc = piece_add(&p, ss + sb, se - sb, HERD_ROLE_SYSTEM, sys);
    if (!rc) rc = piece_add(&p, E_SYS, strlen(E_SYS), HERD_ROLE_TEMPLATE, user);
    size_t zero = 0;
    strip_range(us, &zero, &ue);  // only the end of the combined content is stripped
  } else {
    strip_range(us, &ub, &ue);
  }
  if (!rc) rc = piece_add(&p, us + ub, ue - ub, HERD_ROLE_USER, user);
  if (!rc) rc = piece_add(&p, " " E_INST, strlen(E_INST) + 1, HERD_ROLE_TEMPLATE, user);
  if (answer >= 0) {
    const char *as = msgs[answer].content;
    size_t ab = 0, ae = strlen(as);
    strip_range(as, &ab, &ae);
    if (!rc) rc = piece_add(&p, " ", 1, HERD_ROLE_ASSISTANT, answer);
    if (!rc) rc = piece_add(&p, as + ab, ae - ab, HERD_ROLE_ASSISTANT, answer);
    if (!rc) rc = piece_add(&p, " ", 1, HERD_ROLE_ASSISTANT, answer);
  }
  if (!rc) rc = encode_core(t, p.text.s, p.text.n, HERD_TOK_NO_SPECIAL, &ids, &spans);
  if (!rc) rc = chat_push(c, cap, t->bos_id, HERD_ROLE_TEMPLATE, user);
  for (size_t i = 0; i < ids.n && !rc; i++) {
    int role = HERD_ROLE_TEMPLATE, msg = user;
    for (int32_t b = spans.v[2 * i]; b >= 0 && b < spans.v[2 * i + 1]; b++) {
      int o = p.owner.v[b];
      if (o >> 24 != HERD_ROLE_TEMPLATE) {
        role = o >> 24;
        msg = o & 0xffffff;
        break;
      }
    }
    rc = chat_push(c, cap, ids.v[i], role, msg);
  }
  if (!rc && answer >= 0) rc = chat_push(c, cap, t->eos_id, HERD_ROLE_ASSISTANT, answer);
  free(p.text.s);
  free(p.owner.v);
  free(ids.v);
  free(spans.v);
  return rc;
}

int herd_tokenizer_chat(const herd_tokenizer *t, const herd_chat_msg *msgs, size_t n_msgs,
                        herd_chat_tokens *out) {
  memset(out, 0, sizeof *out);
  if (t->bos_id < 0 || t->eos_id < 0)
    return herd_seterr(HERD_EINVAL, "tokenizer: chat: the vocabulary has no <s> or </s>");
  if (n_msgs > 0xffffff) return herd_seterr(HERD_EINVAL, "tokenizer: chat: too many messages");
  size_t i = 0;
  int sys = -1;
  if (n_msgs && msgs[0].role == HERD_ROLE_SYSTEM) sys = (int)i++;
  if (i >= n_msgs) return herd_seterr(HERD_EINVAL, "tokenizer: chat: no user message");
  for (size_t k = 0; k < n_msgs; k++) {
    int want = k < i ? HERD_ROLE_SYSTEM : ((k - i) % 2 == 0 ? HERD_ROLE_USER : HERD_ROLE_ASSISTANT);
    if (msgs[k].role != want)
      return herd_seterr(HERD_EINVAL, "tokenizer: chat: message %zu has role %d, expected %s", k,
                         msgs[k].role,
                         want == HERD_ROLE_USER        ? "user"
                         : want == HERD_ROLE_ASSISTANT ? "assistant"
                                                       : "system");
    if (!msgs[k].content)
      return herd_seterr(HERD_EINVAL, "tokenizer: chat: message %zu has no content", k);
    if (!utf8_valid(msgs[k].content, strlen(msgs[k].content)))
      return herd_seterr(HERD_EINVAL, "tokenizer: chat: message %zu is not valid UTF-8", k);
  }
  size_t cap = 0;
  int rc = 0;
  for (; i < n_msgs && !rc; i += 2) {
    int answer = i + 1 < n_msgs ? (int)i + 1 : -1;
    rc = chat_turn(t, msgs, sys, (int)i, answer, out, &cap);
    sys = -1;
  }
  if (rc) herd_chat_tokens_free(out);
  return rc;
}
