// Tokenizer tests: the committed Llama-format tokenizer.json against the Hugging Face `tokenizers`
// library's ids (t/fixtures/tokenizer/reference.json, made by
// t/fixtures/make_tokenizer_fixture.py), round trips, special tokens, byte fallback, training, the
// chat template, and bad input.
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "tokenizer.h"

#define TOK_JSON HERD_FIXTURES "/tokenizer/tokenizer.json"
#define REF_JSON HERD_FIXTURES "/tokenizer/reference.json"

static herd_tokenizer *tok;
static json_t *ref;

static void setup(void) {
  int rc = herd_tokenizer_load(&tok, TOK_JSON);
  cr_assert_eq(rc, 0, "load: %s", herd_errmsg());
  json_error_t err;
  ref = json_load_file(REF_JSON, JSON_ALLOW_NUL, &err);
  cr_assert(ref, "reference.json: %s", err.text);
}

static void teardown(void) {
  herd_tokenizer_free(tok);
  json_decref(ref);
}

static size_t ids_of(json_t *arr, int32_t **out) {
  size_t n = json_array_size(arr);
  *out = malloc((n + 1) * sizeof **out);
  for (size_t i = 0; i < n; i++) (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, i));
  return n;
}

static int ids_eq(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
  return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void print_ids(const char *what, const int32_t *a, size_t n) {
  fprintf(stderr, "  %s:", what);
  for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", a[i]);
  fprintf(stderr, "\n");
}

// Round trips hold for text without added-token strings and without U+2581 `▁` itself (which
// the decoder turns into a space, as `tokenizers` and SentencePiece do).
static int has_added_text(const char *s) {
  return strstr(s, "<s>") || strstr(s, "</s>") || strstr(s, "<unk>") || strstr(s, "\xe2\x96\x81");
}

TestSuite(tokenizer, .init = setup, .fini = teardown);

Test(tokenizer, basics) {
  cr_assert_eq(herd_tokenizer_vocab_size(tok), 32000);
  cr_assert_eq(herd_tokenizer_bos_id(tok), 1);
  cr_assert_eq(herd_tokenizer_eos_id(tok), 2);
  cr_assert_str_eq(herd_tokenizer_token(tok, 0), "<unk>");
  cr_assert_eq(herd_tokenizer_token_id(tok, "<0x0A>"), 13);
  cr_assert_null(herd_tokenizer_token(tok, 32000));
  int32_t *ids;
  size_t n;
  const char *s = "Hello, my dog is cute";
  cr_assert_eq(herd_tokenizer_encode(tok, s, strlen(s), HERD_TOK_BOS, &ids, &n), 0);
  int32_t want[] = {1, 22557, 28725, 586, 3914, 349, 17949};
  cr_assert(ids_eq(ids, n, want, 7));
  free(ids);
  cr_assert_eq(herd_tokenizer_encode(tok, "", 0, 0, &ids, &n), 0);
  cr_assert_eq(n, 0);
  cr_assert_null(ids);
  cr_assert_eq(herd_tokenizer_encode(tok, "x", 1, HERD_TOK_BOS | HERD_TOK_EOS, &ids, &n), 0);
  cr_assert_eq(n, 3);
  cr_assert_eq(ids[0], 1);
  cr_assert_eq(ids[2], 2);
  free(ids);
}

// acceptance 3: every reference string, id for id, with and without BOS; decode as the library
static void check_reference_strings(herd_tokenizer *tk, json_t *rf, const char *what) {
  json_t *strs = json_object_get(rf, "strings");
  size_t total = json_array_size(strs), ok = 0, ok_nobos = 0, ok_dec = 0, ok_rt = 0, n_rt = 0;
  cr_assert_geq(total, 200);
  for (size_t i = 0; i < total; i++) {
    json_t *c = json_array_get(strs, i);
    const char *text = json_string_value(json_object_get(c, "text"));
    size_t len = json_string_length(json_object_get(c, "text"));
    int32_t *want, *got;
    size_t nw = ids_of(json_object_get(c, "ids"), &want), ng;
    cr_assert_eq(herd_tokenizer_encode(tk, text, len, HERD_TOK_BOS, &got, &ng), 0, "%s",
                 herd_errmsg());
    if (ids_eq(got, ng, want, nw)) {
      ok++;
    } else {
      fprintf(stderr, "mismatch for string %zu \"%s\"\n", i, text);
      print_ids("want", want, nw);
      print_ids("got ", got, ng);
    }
    char *dec;
    size_t dl;
    cr_assert_eq(herd_tokenizer_decode(tk, got, ng, HERD_TOK_SKIP_SPECIAL, &dec, &dl), 0);
    json_t *want_dec = json_object_get(c, "decoded");
    if (dl == json_string_length(want_dec) && !memcmp(dec, json_string_value(want_dec), dl))
      ok_dec++;
    else
      fprintf(stderr, "decode differs for string %zu \"%s\": \"%s\"\n", i, text, dec);
    if (!has_added_text(text)) {
      n_rt++;
      if (dl == len && !memcmp(dec, text, len))
        ok_rt++;
      else
        fprintf(stderr, "round trip fails for string %zu \"%s\": \"%s\"\n", i, text, dec);
    }
    free(dec);
    free(want);
    free(got);
    nw = ids_of(json_object_get(c, "ids_no_bos"), &want);
    cr_assert_eq(herd_tokenizer_encode(tk, text, len, 0, &got, &ng), 0);
    if (ids_eq(got, ng, want, nw)) ok_nobos++;
    free(want);
    free(got);
  }
  fprintf(stderr,
          "%s reference strings: %zu/%zu ids match (BOS), %zu/%zu (no BOS), %zu/%zu decodes "
          "match, %zu/%zu round trips\n",
          what, ok, total, ok_nobos, total, ok_dec, total, ok_rt, n_rt);
  cr_assert_eq(ok, total);
  cr_assert_eq(ok_nobos, total);
  cr_assert_eq(ok_dec, total);
  cr_assert_eq(ok_rt, n_rt);
}

Test(tokenizer, reference_strings) {
  check_reference_strings(tok, ref, "Mistral-vocabulary");
}

// the newer Llama form of tokenizer.json: a Metaspace pre-tokenizer instead of the normalizer
Test(tokenizer, reference_strings_metaspace) {
  json_error_t err;
  json_t *d = json_load_file(TOK_JSON, 0, &err);
  cr_assert(d);
  json_object_set_new(d, "normalizer", json_null());
  json_object_set_new(d, "pre_tokenizer",
                      json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
                                "\xe2\x96\x81", "prepend_scheme", "first", "split", 0));
  char *text = json_dumps(d, 0);
  json_decref(d);
  herd_tokenizer *mt;
  cr_assert_eq(herd_tokenizer_load_json(&mt, text, strlen(text), "metaspace"), 0, "%s",
               herd_errmsg());
  free(text);
  json_t *strs = json_object_get(ref, "strings");
  size_t total = json_array_size(strs), ok = 0;
  for (size_t i = 0; i < total; i++) {
    json_t *c = json_array_get(strs, i), *tx = json_object_get(c, "text");
    int32_t *want, *got;
    size_t nw = ids_of(json_object_get(c, "ids_metaspace"), &want), ng;
    cr_assert_eq(herd_tokenizer_encode(mt, json_string_value(tx), json_string_length(tx),
                                       HERD_TOK_BOS, &got, &ng),
                 0);
    if (ids_eq(got, ng, want, nw))
      ok++;
    else
      fprintf(stderr, "metaspace mismatch for string %zu \"%s\"\n", i, json_string_value(tx));
    free(want);
    free(got);
  }
  fprintf(stderr, "reference strings (Metaspace form): %zu/%zu ids match\n", ok, total);
  cr_assert_eq(ok, total);
  herd_tokenizer_free(mt);
}

Test(tokenizer, special_tokens_in_text) {
  int32_t *ids;
  size_t n;
  const char *s = "Hello<s>world</s>";
  cr_assert_eq(herd_tokenizer_encode(tok, s, strlen(s), 0, &ids, &n), 0);
  int32_t want[] = {22557, 1, 1526, 2};  // each piece gets its own `▁`, as in `tokenizers`
  cr_assert(ids_eq(ids, n, want, 4));
  char *dec;
  cr_assert_eq(herd_tokenizer_decode(tok, ids, n, 0, &dec, NULL), 0);
  cr_assert_str_eq(dec, "Hello<s> world</s>");
  free(dec);
  cr_assert_eq(herd_tokenizer_decode(tok, ids, n, HERD_TOK_SKIP_SPECIAL, &dec, NULL), 0);
  cr_assert_str_eq(dec, "Hello world");
  free(dec);
  free(ids);
  // with NO_SPECIAL the same text is plain text: no id 1 or 2 appears
  cr_assert_eq(herd_tokenizer_encode(tok, s, strlen(s), HERD_TOK_NO_SPECIAL, &ids, &n), 0);
  for (size_t i = 0; i < n; i++) cr_assert(ids[i] > 2);
  cr_assert_eq(herd_tokenizer_decode(tok, ids, n, 0, &dec, NULL), 0);
  cr_assert_str_eq(dec, s);
  free(dec);
  free(ids);
}

Test(tokenizer, byte_fallback) {
  const char *s = "\xf0\x93\x80\x80";  // U+13000, not in the vocabulary
  int32_t *ids;
  size_t n;
  cr_assert_eq(herd_tokenizer_encode(tok, s, strlen(s), 0, &ids, &n), 0);
  cr_assert_eq(n, 5);
  cr_assert_eq(ids[0], herd_tokenizer_token_id(tok, "\xe2\x96\x81"));
  cr_assert_eq(ids[1], herd_tokenizer_token_id(tok, "<0xF0>"));
  cr_assert_eq(ids[4], herd_tokenizer_token_id(tok, "<0x80>"));
  char *dec;
  cr_assert_eq(herd_tokenizer_decode(tok, ids, n, 0, &dec, NULL), 0);
  cr_assert_str_eq(dec, s);
  free(dec);
  // a partial byte run decodes to U+FFFD per byte, as the ByteFallback decoder does
  int32_t part[] = {ids[1], ids[2]};
  cr_assert_eq(herd_tokenizer_decode(tok, part, 2, 0, &dec, NULL), 0);
  cr_assert_str_eq(dec, "\xef\xbf\xbd\xef\xbf\xbd");
  free(dec);
  free(ids);
  // invalid UTF-8 input is refused
  cr_assert_eq(herd_tokenizer_encode(tok, "\xff", 1, 0, &ids, &n), HERD_EINVAL);
  int32_t bad = 32000;
  cr_assert_eq(herd_tokenizer_decode(tok, &bad, 1, 0, &dec, NULL), HERD_EINVAL);
}

// chat: ids equal Meta's format applied with the HF tokenizer; roles are consistent
static void check_chats(herd_tokenizer *tk, json_t *rf) {
  json_t *chats = json_object_get(rf, "chats");
  cr_assert_gt(json_array_size(chats), 0);
  for (size_t c = 0; c < json_array_size(chats); c++) {
    json_t *msgs = json_object_get(json_array_get(chats, c), "messages");
    size_t nm = json_array_size(msgs);
    herd_chat_msg m[16];
    for (size_t i = 0; i < nm; i++) {
      const char *role = json_string_value(json_object_get(json_array_get(msgs, i), "role"));
      m[i].role = !strcmp(role, "system") ? HERD_ROLE_SYSTEM
                  : !strcmp(role, "user") ? HERD_ROLE_USER
                                          : HERD_ROLE_ASSISTANT;
      m[i].content = json_string_value(json_object_get(json_array_get(msgs, i), "content"));
    }
    herd_chat_tokens ct;
    cr_assert_eq(herd_tokenizer_chat(tk, m, nm, &ct), 0, "%s", herd_errmsg());
    int32_t *want;
    size_t nw = ids_of(json_object_get(json_array_get(chats, c), "ids"), &want);
    if (!ids_eq(ct.ids, ct.n, want, nw)) {
      print_ids("want", want, nw);
      print_ids("got ", ct.ids, ct.n);
    }
    cr_assert(ids_eq(ct.ids, ct.n, want, nw), "chat %zu ids differ from the reference", c);
    free(want);
    // every message owns at least one token; assistant tokens decode to the answer
    for (size_t i = 0; i < nm; i++) {
      size_t cnt = 0;
      int32_t *sel = malloc(ct.n * sizeof *sel);
      size_t ns = 0;
      for (size_t k = 0; k < ct.n; k++) {
        if (ct.msg[k] != (int32_t)i || ct.roles[k] == HERD_ROLE_TEMPLATE) continue;
        cr_assert_eq(ct.roles[k], m[i].role, "chat %zu token %zu role", c, k);
        cnt++;
        sel[ns++] = ct.ids[k];
      }
      cr_assert_gt(cnt, 0, "chat %zu message %zu has an empty mask", c, i);
      if (m[i].role == HERD_ROLE_ASSISTANT) {
        cr_assert_eq(sel[ns - 1], herd_tokenizer_eos_id(tk), "the answer's EOS is the assistant's");
        char *dec;
        cr_assert_eq(herd_tokenizer_decode(tk, sel, ns, HERD_TOK_SKIP_SPECIAL, &dec, NULL), 0);
        // strip like Meta does
        const char *a = m[i].content;
        size_t ab = 0, ae = strlen(a);
        while (ab < ae && strchr(" \t\n\r", a[ab])) ab++;
        while (ae > ab && strchr(" \t\n\r", a[ae - 1])) ae--;
        size_t dl = strlen(dec);
        cr_assert(dl == ae - ab + 1 && !memcmp(dec, a + ab, ae - ab) && dec[dl - 1] == ' ',
                  "chat %zu answer decodes to \"%s\"", c, dec);
        free(dec);
      }
      free(sel);
    }
    // BOS tokens are template
    for (size_t k = 0; k < ct.n; k++)
      if (ct.ids[k] == herd_tokenizer_bos_id(tk)) cr_assert_eq(ct.roles[k], HERD_ROLE_TEMPLATE);
    herd_chat_tokens_free(&ct);
  }
}

Test(tokenizer, chat_reference) {
  check_chats(tok, ref);
}

Test(tokenizer, chat_roles_layout) {
  herd_chat_msg m[] = {{HERD_ROLE_SYSTEM, "SYS"},
                       {HERD_ROLE_USER, "question"},
                       {HERD_ROLE_ASSISTANT, "answer"},
                       {HERD_ROLE_USER, "again"}};
  herd_chat_tokens ct;
  cr_assert_eq(herd_tokenizer_chat(tok, m, 4, &ct), 0, "%s", herd_errmsg());
  // the final user turn ends with [/INST] and has no EOS
  cr_assert_neq(ct.ids[ct.n - 1], herd_tokenizer_eos_id(tok));
  cr_assert_eq(ct.roles[ct.n - 1], HERD_ROLE_TEMPLATE);
  cr_assert_eq(ct.msg[ct.n - 1], 3);
  // two BOS, one EOS
  size_t nb = 0, ne = 0;
  for (size_t k = 0; k < ct.n; k++) {
    nb += ct.ids[k] == 1;
    ne += ct.ids[k] == 2;
  }
  cr_assert_eq(nb, 2);
  cr_assert_eq(ne, 1);
  herd_chat_tokens_free(&ct);
  // bad orders
  herd_chat_msg bad1[] = {{HERD_ROLE_ASSISTANT, "x"}};
  cr_assert_eq(herd_tokenizer_chat(tok, bad1, 1, &ct), HERD_EINVAL);
  herd_chat_msg bad2[] = {{HERD_ROLE_USER, "x"}, {HERD_ROLE_USER, "y"}};
  cr_assert_eq(herd_tokenizer_chat(tok, bad2, 2, &ct), HERD_EINVAL);
  herd_chat_msg bad3[] = {{HERD_ROLE_SYSTEM, "x"}};
  cr_assert_eq(herd_tokenizer_chat(tok, bad3, 1, &ct), HERD_EINVAL);
}

static const char *corpus[] = {
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog are friends",
    "the the the cat cat dog",
    "Über café naïve — 中文 😀",
    "numbers 123 456 123 456",
    "  leading spaces and\ttabs\nnewlines  ",
    "the mat is on the floor and the cat is on the mat",
};

Test(tokenizer, train_save_reload) {
  herd_tokenizer *tr;
  int rc = herd_tokenizer_train(&tr, corpus, sizeof corpus / sizeof *corpus, 330, 1);
  cr_assert_eq(rc, 0, "%s", herd_errmsg());
  cr_assert_eq(herd_tokenizer_vocab_size(tr), 330);
  cr_assert_eq(herd_tokenizer_token_id(tr, "<unk>"), 0);
  cr_assert_eq(herd_tokenizer_token_id(tr, "<0x00>"), 3);
  cr_assert_geq(herd_tokenizer_token_id(tr, "\xe2\x96\x81the"), 259);  // `▁the` was merged
  char path[] = "/tmp/herd_tok_train_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  cr_assert_eq(herd_tokenizer_save(tr, path), 0, "%s", herd_errmsg());
  herd_tokenizer *re;
  cr_assert_eq(herd_tokenizer_load(&re, path), 0, "%s", herd_errmsg());
  cr_assert_eq(herd_tokenizer_vocab_size(re), 330);
  const char *tests[] = {
      "the cat sat on the mat", "unseen words ÿ and emoji 🦀", "", "  x  ", "the\tdog\n",
      "中文 <s> literal"};
  for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
    int32_t *a, *b;
    size_t na, nb;
    cr_assert_eq(
        herd_tokenizer_encode(tr, tests[i], strlen(tests[i]), HERD_TOK_NO_SPECIAL, &a, &na), 0);
    cr_assert_eq(
        herd_tokenizer_encode(re, tests[i], strlen(tests[i]), HERD_TOK_NO_SPECIAL, &b, &nb), 0);
    cr_assert(ids_eq(a, na, b, nb), "trained and reloaded tokenizers agree on \"%s\"", tests[i]);
    char *dec;
    cr_assert_eq(herd_tokenizer_decode(re, b, nb, 0, &dec, NULL), 0);
    cr_assert_str_eq(dec, tests[i]);
    free(dec);
    free(a);
    free(b);
  }
  // the merged words are single tokens
  int32_t *ids;
  size_t n;
  cr_assert_eq(herd_tokenizer_encode(re, "the", 3, 0, &ids, &n), 0);
  cr_assert_eq(n, 1);
  free(ids);
  // saved again, byte for byte the same file
  char path2[] = "/tmp/herd_tok_train2_XXXXXX";
  fd = mkstemp(path2);
  close(fd);
  cr_assert_eq(herd_tokenizer_save(re, path2), 0);
  FILE *f1 = fopen(path, "rb"), *f2 = fopen(path2, "rb");
  int c1, c2;
  do {
    c1 = fgetc(f1);
    c2 = fgetc(f2);
  } while (c1 == c2 && c1 != EOF);
  cr_assert_eq(c1, c2, "save(load(save(x))) == save(x)");
  fclose(f1);
  fclose(f2);
  if (getenv("HERD_TOK_KEEP"))
    fprintf(stderr, "trained tokenizer kept at %s\n", path);
  else
    unlink(path);
  unlink(path2);
  herd_tokenizer_free(re);
  herd_tokenizer_free(tr);
  cr_assert_eq(herd_tokenizer_train(&tr, corpus, 1, 100, 1), HERD_EINVAL);
}

// herd's trainer on the reference strings is deterministic (the committed trained-600.json), and
// `tokenizers` loads that file and encodes the reference strings exactly as herd does
Test(tokenizer, train_matches_tokenizers) {
  json_t *strs = json_object_get(ref, "strings");
  size_t total = json_array_size(strs), nt = 0;
  const char **texts = malloc(total * sizeof *texts);
  for (size_t i = 0; i < total; i++) {
    json_t *tx = json_object_get(json_array_get(strs, i), "text");
    if (strlen(json_string_value(tx)) == json_string_length(tx))
      texts[nt++] = json_string_value(tx);
  }
  herd_tokenizer *tr;
  cr_assert_eq(herd_tokenizer_train(&tr, texts, nt, 600, 1), 0, "%s", herd_errmsg());
  free(texts);
  const char *committed = HERD_FIXTURES "/tokenizer/trained-600.json";
  if (getenv("HERD_TOK_UPDATE")) cr_assert_eq(herd_tokenizer_save(tr, committed), 0);
  char path[] = "/tmp/herd_tok_trained_XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  cr_assert_eq(herd_tokenizer_save(tr, path), 0, "%s", herd_errmsg());
  FILE *f1 = fopen(path, "rb"), *f2 = fopen(committed, "rb");
  cr_assert(f2, "%s missing: run with HERD_TOK_UPDATE=1", committed);
  int c1, c2;
  do {
    c1 = fgetc(f1);
    c2 = fgetc(f2);
  } while (c1 == c2 && c1 != EOF);
  fclose(f1);
  fclose(f2);
  unlink(path);
  herd_tokenizer_free(tr);
  cr_assert_eq(c1, c2, "training output differs from %s", committed);
  cr_assert_eq(herd_tokenizer_load(&tr, committed), 0, "%s", herd_errmsg());
  size_t ok = 0;
  for (size_t i = 0; i < total; i++) {
    json_t *c = json_array_get(strs, i), *tx = json_object_get(c, "text");
    cr_assert(json_object_get(c, "ids_trained"),
              "reference.json lacks ids_trained: rerun the script");
    int32_t *want, *got;
    size_t nw = ids_of(json_object_get(c, "ids_trained"), &want), ng;
    cr_assert_eq(herd_tokenizer_encode(tr, json_string_value(tx), json_string_length(tx),
                                       HERD_TOK_BOS, &got, &ng),
                 0);
    if (ids_eq(got, ng, want, nw))
      ok++;
    else
      fprintf(stderr, "trained mismatch for string %zu \"%s\"\n", i, json_string_value(tx));
    free(want);
    free(got);
  }
  fprintf(stderr, "reference strings (herd-trained vocabulary): %zu/%zu ids match\n", ok, total);
  cr_assert_eq(ok, total);
  herd_tokenizer_free(tr);
}

// acceptance 7: unsupported or broken tokenizer.json files are clear errors
static void expect_error(const char *json, int code, const char *needle) {
  herd_tokenizer *t = NULL;
  int rc = herd_tokenizer_load_json(&t, json, strlen(json), "test.json");
  cr_assert_eq(rc, code, "rc %d for %s (%s)", rc, json, herd_errmsg());
  cr_assert_null(t);
  cr_assert(strstr(herd_errmsg(), needle), "message \"%s\" names \"%s\"", herd_errmsg(), needle);
}

#define LLAMA_NORM                                                                             \
  "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "        \
  "\"prepend\": "                                                                              \
  "\"\xe2\x96\x81\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": " \
  "\"\xe2\x96\x81\"}]}"
#define VOCAB "\"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2, \"ab\": 3}"

Test(tokenizer, errors) {
  expect_error("{\"model\": {\"type\": \"WordPiece\", " VOCAB "}, " LLAMA_NORM "}", HERD_EINVAL,
               "model.type");
  expect_error("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, " VOCAB "}, " LLAMA_NORM
               "}",
               HERD_EINVAL, "model.merges");
  expect_error("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, " VOCAB
               ", \"merges\": "
               "[\"a b\"]}, \"normalizer\": {\"type\": \"NFKC\"}}",
               HERD_EINVAL, "normalizer");
  expect_error("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, " VOCAB
               ", \"merges\": "
               "[\"a b\"]}, \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
               HERD_EINVAL, "pre_tokenizer");
  expect_error("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, " VOCAB
               ", \"merges\": "
               "[\"a c\"]}, " LLAMA_NORM "}",
               HERD_EINVAL, "model.merges[0]");
  expect_error("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": false, " VOCAB
               ", \"merges\": "
               "[\"a b\"]}, " LLAMA_NORM "}",
               HERD_EINVAL, "byte_fallback");
  expect_error("{\"normalizer\": null}", HERD_EINVAL, "model");
  expect_error("{\"model\": {\"type\": \"BPE\", ", HERD_ECORRUPT, "invalid JSON");
  expect_error("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, " VOCAB
               ", \"merges\": "
               "[\"a b\"]}, " LLAMA_NORM ", \"decoder\": {\"type\": \"WordPiece\"}}",
               HERD_EINVAL, "decoder");
  expect_error("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, " VOCAB
               ", \"merges\": "
               "[\"a b\"]}, " LLAMA_NORM
               ", \"added_tokens\": [{\"id\": 0, \"content\": "
               "\"<unk>\", \"normalized\": true, \"lstrip\": true, \"special\": true}]}",
               HERD_EINVAL, "added_tokens[0]: normalized=true with lstrip");
  expect_error(
      "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 0, "
      "\"b\": 99}, \"merges\": []}, " LLAMA_NORM "}",
      HERD_EINVAL, "model.vocab ids");
  herd_tokenizer *t;
  cr_assert_eq(herd_tokenizer_load(&t, HERD_FIXTURES "/tokenizer/nonexistent.json"),
               HERD_ENOTFOUND);
  // the minimal valid file loads; merges as [a, b] pairs are accepted too
  const char *ok =
      "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": "
      "\"<unk>\", " VOCAB ", \"merges\": [[\"a\", \"b\"]]}, " LLAMA_NORM "}";
  cr_assert_eq(herd_tokenizer_load_json(&t, ok, strlen(ok), "ok.json"), 0, "%s", herd_errmsg());
  int32_t *ids;
  size_t n;
  cr_assert_eq(herd_tokenizer_encode(t, "ab", 2, 0, &ids, &n), 0);
  cr_assert_eq(n, 2);  // `▁` is unknown (no byte tokens): <unk>, then ab
  cr_assert_eq(ids[0], 0);
  cr_assert_eq(ids[1], 3);
  free(ids);
  herd_tokenizer_free(t);
}

// ---------------------------------------------------------------------------------------------
// The real Llama 2 tokenizer: t/fixtures/llama2-tokenizer/tokenizer.json, made from Meta's
// tokenizer.model as Llama-2-7b-hf's was (its added tokens are `normalized: true`), against
// `tokenizers` (ids, ids_no_bos, decoded, chats) and SentencePiece itself (ids_sp).

#define L2_JSON HERD_FIXTURES "/llama2-tokenizer/tokenizer.json"
#define L2_REF HERD_FIXTURES "/llama2-tokenizer/reference.json"

static herd_tokenizer *l2;
static json_t *l2ref;

static void l2_setup(void) {
  int rc = herd_tokenizer_load(&l2, L2_JSON);
  cr_assert_eq(rc, 0, "load: %s", herd_errmsg());
  json_error_t err;
  l2ref = json_load_file(L2_REF, JSON_ALLOW_NUL, &err);
  cr_assert(l2ref, "llama2 reference.json: %s", err.text);
}

static void l2_teardown(void) {
  herd_tokenizer_free(l2);
  json_decref(l2ref);
}

TestSuite(llama2, .init = l2_setup, .fini = l2_teardown);

Test(llama2, basics) {
  cr_assert_eq(herd_tokenizer_vocab_size(l2), 32000);
  cr_assert_eq(herd_tokenizer_bos_id(l2), 1);
  cr_assert_eq(herd_tokenizer_eos_id(l2), 2);
  cr_assert_str_eq(herd_tokenizer_token(l2, 2), "</s>");
  cr_assert_eq(herd_tokenizer_token_id(l2, "<0x0A>"), 13);
  // the committed file is the real one: added tokens are normalized
  json_error_t err;
  json_t *d = json_load_file(L2_JSON, 0, &err);
  cr_assert(d);
  json_t *added = json_object_get(d, "added_tokens");
  cr_assert_eq(json_array_size(added), 3);
  for (size_t i = 0; i < 3; i++)
    cr_assert(json_is_true(json_object_get(json_array_get(added, i), "normalized")));
  json_decref(d);
  int32_t *ids;
  size_t n;
  const char *s = "Hello, my dog is cute";
  cr_assert_eq(herd_tokenizer_encode(l2, s, strlen(s), HERD_TOK_BOS, &ids, &n), 0);
  int32_t want[] = {1, 15043, 29892, 590, 11203, 338, 274, 1082};
  cr_assert(ids_eq(ids, n, want, 8));
  free(ids);
}

Test(llama2, reference_strings) {
  check_reference_strings(l2, l2ref, "Llama 2");
}

// normalized added tokens are matched in the normalized text as `▁<s>`: only at the start or
// after a space, and the piece after one gets no `▁` of its own
Test(llama2, normalized_special_tokens) {
  struct {
    const char *text;
    int32_t want[8];
    size_t n;
  } cases[] = {
      {"Hello<s>world</s>", {15043, 29966, 29879, 29958, 11526, 829, 29879, 29958}, 8},
      {"<s></s>", {1, 829, 29879, 29958}, 4},
      {"a </s> b", {263, 2, 289}, 3},
      {"  <s>  ", {259, 1, 259}, 3},
      {"<s>", {1}, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int32_t *ids;
    size_t n;
    cr_assert_eq(herd_tokenizer_encode(l2, cases[i].text, strlen(cases[i].text), 0, &ids, &n), 0);
    if (!ids_eq(ids, n, cases[i].want, cases[i].n)) print_ids("got", ids, n);
    cr_assert(ids_eq(ids, n, cases[i].want, cases[i].n), "\"%s\"", cases[i].text);
    free(ids);
  }
}

// With HERD_TOK_NO_SPECIAL (added-token text is plain text), herd equals SentencePiece on Meta's
// tokenizer.model for every reference string; `tokenizers` differs only where the text contains
// `<s>`, `</s>` or `<unk>` (which it turns into control tokens).
Test(llama2, sentencepiece) {
  json_t *strs = json_object_get(l2ref, "strings");
  size_t total = json_array_size(strs), ok = 0, tk_eq = 0;
  for (size_t i = 0; i < total; i++) {
    json_t *c = json_array_get(strs, i), *tx = json_object_get(c, "text");
    int32_t *want, *got, *hf;
    size_t nw = ids_of(json_object_get(c, "ids_sp"), &want), ng;
    size_t nh = ids_of(json_object_get(c, "ids"), &hf);
    cr_assert_eq(herd_tokenizer_encode(l2, json_string_value(tx), json_string_length(tx),
                                       HERD_TOK_BOS | HERD_TOK_NO_SPECIAL, &got, &ng),
                 0);
    if (ids_eq(got, ng, want, nw)) {
      ok++;
    } else {
      fprintf(stderr, "SentencePiece mismatch for string %zu \"%s\"\n", i, json_string_value(tx));
      print_ids("want", want, nw);
      print_ids("got ", got, ng);
    }
    if (ids_eq(hf, nh, want, nw))
      tk_eq++;
    else
      cr_assert(has_added_text(json_string_value(tx)), "tokenizers differs from SentencePiece");
    free(want);
    free(got);
    free(hf);
  }
  fprintf(stderr,
          "Llama 2 vs SentencePiece: herd (NO_SPECIAL) %zu/%zu equal; tokenizers %zu/%zu equal\n",
          ok, total, tk_eq, total);
  cr_assert_eq(ok, total);
}

Test(llama2, chat_reference) {
  check_chats(l2, l2ref);
}

// saved and reloaded, the normalized flags survive and encodings stay the same; the Metaspace
// form (no normalizer) accepts normalized tokens and matches them in the raw text
Test(llama2, save_reload) {
  char path[] = "/tmp/herd_tok_l2_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  cr_assert_eq(herd_tokenizer_save(l2, path), 0, "%s", herd_errmsg());
  herd_tokenizer *re;
  cr_assert_eq(herd_tokenizer_load(&re, path), 0, "%s", herd_errmsg());
  unlink(path);
  json_t *strs = json_object_get(l2ref, "strings");
  for (size_t i = 0; i < json_array_size(strs); i++) {
    json_t *c = json_array_get(strs, i), *tx = json_object_get(c, "text");
    int32_t *want, *got;
    size_t nw = ids_of(json_object_get(c, "ids"), &want), ng;
    cr_assert_eq(herd_tokenizer_encode(re, json_string_value(tx), json_string_length(tx),
                                       HERD_TOK_BOS, &got, &ng),
                 0);
    cr_assert(ids_eq(got, ng, want, nw), "reloaded: string %zu", i);
    free(want);
    free(got);
  }
  herd_tokenizer_free(re);
  json_error_t err;
  json_t *d = json_load_file(L2_JSON, 0, &err);
  cr_assert(d);
  json_object_set_new(d, "normalizer", json_null());
  json_object_set_new(d, "pre_tokenizer",
                      json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
                                "\xe2\x96\x81", "prepend_scheme", "first", "split", 0));
  char *text = json_dumps(d, 0);
  json_decref(d);
  herd_tokenizer *mt;
  cr_assert_eq(herd_tokenizer_load_json(&mt, text, strlen(text), "metaspace"), 0, "%s",
               herd_errmsg());
  free(text);
  int32_t *ids;
  size_t n;
  cr_assert_eq(herd_tokenizer_encode(mt, "Hello<s>", 8, 0, &ids, &n), 0);
  cr_assert_eq(n, 2);
  cr_assert_eq(ids[1], 1);
  free(ids);
  herd_tokenizer_free(mt);
}
