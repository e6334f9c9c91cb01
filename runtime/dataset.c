// defines: the JSONL datasets declared in dataset.h (storage, loader, preference schema, views,
//          writer, statistics)
//
// Storage: a text arena of NUL-terminated JSON lines, per-record offset/length/origin/line, and
// columns filled from each record when its fields have the expected type (schema or not):
// interned ids for source/rating/domain/safety_bin (0 = absent or not a string), batch (NaN =
// absent), character lengths (-1 = absent) and user turns. Views are uint32 index arrays.
#include "dataset.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "rng.h"

static const char *const category_fields[HERD_DS_NCATEGORIES] = {"source", "rating", "domain",
                                                                 "safety_bin"};
static const char *const length_fields[3] = {"prompt", "chosen", "rejected"};

// Interned strings: values[id - 1] for id >= 1, found through an open-addressing hash.
typedef struct intern_table {
  char **values;
  size_t n, cap;
  uint32_t *slots;  // 0 = empty, else id
  size_t n_slots;
} intern_table;

typedef struct ds_store {
  int refs;
  char *text;
  size_t text_len, text_cap;
  size_t n, cap;
  uint64_t *offset;
  uint32_t *length, *line, *origin;
  uint32_t *cat[HERD_DS_NCATEGORIES];
  double *batch;
  int32_t *chars[3];
  uint16_t *turns;  // user turns; 0 when the record has neither prompt nor dialog
  uint8_t *is_dialog;
  intern_table interned[HERD_DS_NCATEGORIES];
  intern_table origins;
} ds_store;

struct herd_dataset {
  ds_store *store;
  uint32_t *idx;
  size_t n;
};

// ---------------------------------------------------------------- interning

static uint64_t hash_string(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static uint32_t intern_find(const intern_table *t, const char *s, size_t len) {
  if (!t->n_slots) return 0;
  size_t mask = t->n_slots - 1;
  for (size_t i = hash_string(s, len) & mask;; i = (i + 1) & mask) {
    uint32_t id = t->slots[i];
    if (!id) return 0;
    const char *v = t->values[id - 1];
    if (strlen(v) == len && memcmp(v, s, len) == 0) return id;
  }
}

static int intern_rehash(intern_table *t, size_t n_slots) {
  uint32_t *slots = calloc(n_slots, sizeof *slots);
  if (!slots) return -1;
  for (size_t id = 1; id <= t->n; id++) {
    const char *v = t->values[id - 1];
    size_t i = hash_string(v, strlen(v)) & (n_slots - 1);
    while (slots[i]) i = (i + 1) & (n_slots - 1);
    slots[i] = (uint32_t)id;
  }
  free(t->slots);
  t->slots = slots;
  t->n_slots = n_slots;
  return 0;
}

// The id of s (added when new), or 0 when out of memory.
static uint32_t intern_add(intern_table *t, const char *s, size_t len) {
  uint32_t id = intern_find(t, s, len);
  if (id) return id;
  if ((t->n + 1) * 2 > t->n_slots && intern_rehash(t, t->n_slots ? t->n_slots * 2 : 16)) return 0;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    char **values = realloc(t->values, cap * sizeof *values);
    if (!values) return 0;
    t->values = values, t->cap = cap;
  }
  char *copy = malloc(len + 1);
  if (!copy) return 0;
  memcpy(copy, s, len);
  copy[len] = 0;
  t->values[t->n++] = copy;
  id = (uint32_t)t->n;
  size_t i = hash_string(s, len) & (t->n_slots - 1);
  while (t->slots[i]) i = (i + 1) & (t->n_slots - 1);
  t->slots[i] = id;
  return id;
}

static void intern_free(intern_table *t) {
  for (size_t i = 0; i < t->n; i++) free(t->values[i]);
  free(t->values);
  free(t->slots);
}

static size_t intern_bytes(const intern_table *t) {
  size_t bytes = t->cap * sizeof *t->values + t->n_slots * sizeof *t->slots;
  for (size_t i = 0; i < t->n; i++) bytes += strlen(t->values[i]) + 1;
  return bytes;
}

// ---------------------------------------------------------------- storage

static ds_store *store_new(void) {
  ds_store *s = calloc(1, sizeof *s);
  if (s) s->refs = 1;
  return s;
}

static void store_release(ds_store *s) {
  if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
  free(s->text);
  free(s->offset), free(s->length), free(s->line), free(s->origin);
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) free(s->cat[c]), intern_free(&s->interned[c]);
  free(s->batch);
  for (int k = 0; k < 3; k++) free(s->chars[k]);
  free(s->turns), free(s->is_dialog);
  intern_free(&s->origins);
  free(s);
}

#define GROW(field, cap)                                                \
  do {                                                                  \
    void *p_ = realloc((field), (cap) * sizeof *(field));               \
    if (!p_) return herd_seterr(HERD_ENOMEM, "dataset: out of memory"); \
    (field) = p_;                                                       \
  } while (0)

static int store_reserve(ds_store *s, size_t n) {
  if (n <= s->cap) return 0;
  if (n > UINT32_MAX) return herd_seterr(HERD_EINVAL, "dataset: more than 2^32 records");
  size_t cap = s->cap ? s->cap : 64;
  while (cap < n) cap *= 2;
  GROW(s->offset, cap);
  GROW(s->length, cap);
  GROW(s->line, cap);
  GROW(s->origin, cap);
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) GROW(s->cat[c], cap);
  GROW(s->batch, cap);
  for (int k = 0; k < 3; k++) GROW(s->chars[k], cap);
  GROW(s->turns, cap);
  GROW(s->is_dialog, cap);
  s->cap = cap;
  return 0;
}

static int store_add_text(ds_store *s, const char *text, size_t len) {
  if (len > UINT32_MAX) return herd_seterr(HERD_EINVAL, "dataset: a record over 4 GiB");
  if (s->text_len + len + 1 > s->text_cap) {
    size_t cap = s->text_cap ? s->text_cap : 4096;
    while (cap < s->text_len + len + 1) cap *= 2;
    GROW(s->text, cap);
    s->text_cap = cap;
  }
  memcpy(s->text + s->text_len, text, len);
  s->text[s->text_len + len] = 0;
  s->offset[s->n] = s->text_len;
  s->length[s->n] = (uint32_t)len;
  s->text_len += len + 1;
  return 0;
}

static int32_t utf8_chars(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xC0) != 0x80;
  return n > INT32_MAX ? INT32_MAX : (int32_t)n;
}

// Appends a parsed record (its text as given) and fills its columns.
static int store_append(ds_store *s, const char *text, size_t len, const json_t *obj,
                        uint32_t origin, uint32_t line) {
  int status = store_reserve(s, s->n + 1);
  if (status) return status;
  if ((status = store_add_text(s, text, len))) return status;
  size_t r = s->n;
  s->line[r] = line;
  s->origin[r] = origin;
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) {
    json_t *v = json_object_get(obj, category_fields[c]);
    s->cat[c][r] = 0;
    if (json_is_string(v)) {
      s->cat[c][r] = intern_add(&s->interned[c], json_string_value(v), json_string_length(v));
      if (!s->cat[c][r]) return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
    }
  }
  json_t *batch = json_object_get(obj, "batch");
  s->batch[r] = json_is_number(batch) ? json_number_value(batch) : NAN;
  for (int k = 0; k < 3; k++) {
    json_t *v = json_object_get(obj, length_fields[k]);
    s->chars[k][r] =
        json_is_string(v) ? utf8_chars(json_string_value(v), json_string_length(v)) : -1;
  }
  s->turns[r] = 0;
  s->is_dialog[r] = 0;
  json_t *dialog = json_object_get(obj, "dialog");
  if (s->chars[0][r] >= 0) {
    s->turns[r] = 1;
  } else if (json_is_array(dialog)) {
    int64_t chars = 0, turns = 0;
    size_t i;
    json_t *m;
    json_array_foreach(dialog, i, m) {
      json_t *content = json_object_get(m, "content");
      json_t *role = json_object_get(m, "role");
      if (json_is_string(content))
        chars += utf8_chars(json_string_value(content), json_string_length(content));
      if (json_is_string(role) && strcmp(json_string_value(role), "user") == 0) turns++;
    }
    s->chars[0][r] = chars > INT32_MAX ? INT32_MAX : (int32_t)chars;
    s->turns[r] = turns > UINT16_MAX ? UINT16_MAX : (uint16_t)turns;
    s->is_dialog[r] = 1;
  }
  s->n++;
  return 0;
}

// Copies record r of src into dst.
static int store_copy(ds_store *dst, const ds_store *src, uint32_t r) {
  int status = store_reserve(dst, dst->n + 1);
  if (status) return status;
  if ((status = store_add_text(dst, src->text + src->offset[r], src->length[r]))) return status;
  size_t d = dst->n;
  const char *origin = src->origins.values[src->origin[r] - 1];
  dst->origin[d] = intern_add(&dst->origins, origin, strlen(origin));
  if (!dst->origin[d]) return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
  dst->line[d] = src->line[r];
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) {
    dst->cat[c][d] = 0;
    if (src->cat[c][r]) {
      const char *v = src->interned[c].values[src->cat[c][r] - 1];
      dst->cat[c][d] = intern_add(&dst->interned[c], v, strlen(v));
      if (!dst->cat[c][d]) return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
    }
  }
  dst->batch[d] = src->batch[r];
  for (int k = 0; k < 3; k++) dst->chars[k][d] = src->chars[k][r];
  dst->turns[d] = src->turns[r];
  dst->is_dialog[d] = src->is_dialog[r];
  dst->n++;
  return 0;
}

static int view_new(herd_dataset **out, ds_store *store, size_t n) {
  herd_dataset *ds = calloc(1, sizeof *ds);
  uint32_t *idx = malloc((n ? n : 1) * sizeof *idx);
  if (!ds || !idx) {
    free(ds), free(idx);
    return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
  }
  __atomic_add_fetch(&store->refs, 1, __ATOMIC_ACQ_REL);
  ds->store = store;
  ds->idx = idx;
  ds->n = n;
  *out = ds;
  return 0;
}

#define SHRINK(field, n)                                \
  do {                                                  \
    void *p_ = realloc((field), (n) * sizeof *(field)); \
    if (p_) (field) = p_;                               \
  } while (0)

// Gives back the slack of the doubling arrays once a storage is complete.
static void store_shrink(ds_store *s) {
  if (s->text_len && s->text_len < s->text_cap) {
    SHRINK(s->text, s->text_len);
    s->text_cap = s->text_len;
  }
  if (!s->n || s->n == s->cap) return;
  SHRINK(s->offset, s->n);
  SHRINK(s->length, s->n);
  SHRINK(s->line, s->n);
  SHRINK(s->origin, s->n);
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) SHRINK(s->cat[c], s->n);
  SHRINK(s->batch, s->n);
  for (int k = 0; k < 3; k++) SHRINK(s->chars[k], s->n);
  SHRINK(s->turns, s->n);
  SHRINK(s->is_dialog, s->n);
  s->cap = s->n;
}

// A dataset over all of `store` (taking over the caller's reference).
static int view_all(herd_dataset **out, ds_store *store) {
  store_shrink(store);
  int status = view_new(out, store, store->n);
  store_release(store);
  if (status) return status;
  for (size_t i = 0; i < store->n; i++) (*out)->idx[i] = (uint32_t)i;
  return 0;
}

void herd_dataset_free(herd_dataset *ds) {
  if (!ds) return;
  store_release(ds->store);
  free(ds->idx);
  free(ds);
}

size_t herd_dataset_size(const herd_dataset *ds) {
  return ds ? ds->n : 0;
}

int herd_dataset_record(const herd_dataset *ds, size_t i, const char **text, size_t *len) {
  if (!ds || i >= ds->n)
    return herd_seterr(HERD_EINVAL, "dataset: record %zu out of range (%zu records)", i,
                       herd_dataset_size(ds));
  uint32_t r = ds->idx[i];
  *text = ds->store->text + ds->store->offset[r];
  if (len) *len = ds->store->length[r];
  return 0;
}

int herd_dataset_origin(const herd_dataset *ds, size_t i, const char **file, int64_t *line) {
  if (!ds || i >= ds->n)
    return herd_seterr(HERD_EINVAL, "dataset: record %zu out of range (%zu records)", i,
                       herd_dataset_size(ds));
  uint32_t r = ds->idx[i];
  if (file) *file = ds->store->origins.values[ds->store->origin[r] - 1];
  if (line) *line = ds->store->line[r];
  return 0;
}

size_t herd_dataset_bytes(const herd_dataset *ds) {
  const ds_store *s = ds->store;
  size_t per_record = sizeof *s->offset + sizeof *s->length + sizeof *s->line + sizeof *s->origin +
                      HERD_DS_NCATEGORIES * sizeof *s->cat[0] + sizeof *s->batch +
                      3 * sizeof *s->chars[0] + sizeof *s->turns + sizeof *s->is_dialog;
  size_t bytes = sizeof *s + s->text_cap + s->cap * per_record + intern_bytes(&s->origins);
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) bytes += intern_bytes(&s->interned[c]);
  return bytes + sizeof *ds + ds->n * sizeof *ds->idx;
}

// ---------------------------------------------------------------- the preference schema

static const char *const ratings[] = {"significantly better", "better", "slightly better",
                                      "negligibly better",    "unsure", NULL};
static const char *const domains[] = {"helpful", "safety", NULL};
static const char *const safety_bins[] = {"chosen_safe_rejected_unsafe", "both_safe", "both_unsafe",
                                          NULL};
static const char *const roles[] = {"system", "user", "assistant", NULL};

// A short description of a JSON value for messages: strings quoted (cut at 40 bytes).
static void describe_value(const json_t *v, char *buf, size_t cap) {
  switch (json_typeof(v)) {
    case JSON_STRING: {
      size_t len = json_string_length(v);
      snprintf(buf, cap, "\"%.*s%s\"", (int)(len > 40 ? 40 : len), json_string_value(v),
               len > 40 ? "..." : "");
      break;
    }
    case JSON_INTEGER:
      snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
      break;
    case JSON_REAL:
      snprintf(buf, cap, "%g", json_real_value(v));
      break;
    case JSON_OBJECT:
      snprintf(buf, cap, "an object");
      break;
    case JSON_ARRAY:
      snprintf(buf, cap, "an array");
      break;
    case JSON_TRUE:
      snprintf(buf, cap, "true");
      break;
    case JSON_FALSE:
      snprintf(buf, cap, "false");
      break;
    case JSON_NULL:
      snprintf(buf, cap, "null");
      break;
  }
}

// Checks `v` (field `name`) against `choices` (or any non-empty string when choices is NULL);
// writes the failure into msg and returns -1.
static int check_string(const json_t *v, const char *name, const char *const *choices, char *msg,
                        size_t cap) {
  char got[64];
  if (!v) {
    snprintf(msg, cap, "field '%s': missing", name);
    return -1;
  }
  if (json_is_string(v)) {
    if (!choices) return 0;
    for (const char *const *c = choices; *c; c++)
      if (strcmp(json_string_value(v), *c) == 0) return 0;
  }
  describe_value(v, got, sizeof got);
  if (!choices) {
    snprintf(msg, cap, "field '%s': expected a string, got %s", name, got);
    return -1;
  }
  int used = snprintf(msg, cap, "field '%s': expected one of ", name);
  for (const char *const *c = choices; *c && used > 0 && (size_t)used < cap; c++)
    used += snprintf(msg + used, cap - (size_t)used, "%s\"%s\"", c == choices ? "" : ", ", *c);
  if (used > 0 && (size_t)used < cap) snprintf(msg + used, cap - (size_t)used, ", got %s", got);
  return -1;
}

static int check_preference(const json_t *obj, char *msg, size_t cap) {
  json_t *prompt = json_object_get(obj, "prompt"), *dialog = json_object_get(obj, "dialog");
  char got[64];
  if (prompt && dialog) {
    snprintf(msg, cap, "field 'dialog': give either 'prompt' or 'dialog', not both");
    return -1;
  }
  if (!prompt && !dialog) {
    snprintf(msg, cap, "field 'prompt': missing (or give 'dialog')");
    return -1;
  }
  if (prompt && check_string(prompt, "prompt", NULL, msg, cap)) return -1;
  if (dialog) {
    if (!json_is_array(dialog) || json_array_size(dialog) == 0) {
      describe_value(dialog, got, sizeof got);
      snprintf(msg, cap, "field 'dialog': expected a non-empty array of {role, content}, got %s",
               got);
      return -1;
    }
    size_t i;
    json_t *m;
    json_array_foreach(dialog, i, m) {
      char name[64];
      if (!json_is_object(m)) {
        describe_value(m, got, sizeof got);
        snprintf(msg, cap, "field 'dialog[%zu]': expected an object {role, content}, got %s", i + 1,
                 got);
        return -1;
      }
      snprintf(name, sizeof name, "dialog[%zu].role", i + 1);
      if (check_string(json_object_get(m, "role"), name, roles, msg, cap)) return -1;
      snprintf(name, sizeof name, "dialog[%zu].content", i + 1);
      if (check_string(json_object_get(m, "content"), name, NULL, msg, cap)) return -1;
    }
    const char *last = json_string_value(json_object_get(json_array_get(dialog, i - 1), "role"));
    if (strcmp(last, "user") != 0) {
      snprintf(msg, cap,
               "field 'dialog[%zu].role': the last message must be the user's, got \"%s\"", i,
               last);
      return -1;
    }
  }
  if (check_string(json_object_get(obj, "chosen"), "chosen", NULL, msg, cap) ||
      check_string(json_object_get(obj, "rejected"), "rejected", NULL, msg, cap) ||
      check_string(json_object_get(obj, "rating"), "rating", ratings, msg, cap) ||
      check_string(json_object_get(obj, "domain"), "domain", domains, msg, cap))
    return -1;
  json_t *bin = json_object_get(obj, "safety_bin");
  int safety = strcmp(json_string_value(json_object_get(obj, "domain")), "safety") == 0;
  if (safety && check_string(bin, "safety_bin", safety_bins, msg, cap)) return -1;
  if (!safety && bin && !json_is_null(bin)) {
    snprintf(msg, cap, "field 'safety_bin': only for domain \"safety\" (leave it out or null)");
    return -1;
  }
  json_t *batch = json_object_get(obj, "batch");
  if (batch && (!json_is_integer(batch) || json_integer_value(batch) < 0)) {
    describe_value(batch, got, sizeof got);
    snprintf(msg, cap, "field 'batch': expected a non-negative integer, got %s", got);
    return -1;
  }
  json_t *source = json_object_get(obj, "source");
  if (source && (!json_is_string(source) || json_string_length(source) == 0)) {
    describe_value(source, got, sizeof got);
    snprintf(msg, cap, "field 'source': expected a non-empty string, got %s", got);
    return -1;
  }
  return 0;
}

static int check_schema(int schema) {
  if (schema != HERD_SCHEMA_NONE && schema != HERD_SCHEMA_PREFERENCE)
    return herd_seterr(HERD_EINVAL, "dataset: unknown schema %d", schema);
  return 0;
}

// ---------------------------------------------------------------- loading

enum { JSON_FLAGS = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL };

// Parses one line (already trimmed) and appends it; `truncated` marks a last line without its
// newline.
static int load_line(ds_store *s, const char *text, size_t len, const char *origin,
                     uint32_t origin_id, size_t line, int schema, int truncated) {
  json_error_t err;
  json_t *obj = json_loadb(text, len, JSON_FLAGS, &err);
  if (!obj)
    return herd_seterr(HERD_ECORRUPT, "%s:%zu: invalid JSON at column %d: %s%s", origin, line,
                       err.column, err.text, truncated ? " (a truncated last line?)" : "");
  int status = 0;
  char msg[512];
  if (!json_is_object(obj)) {
    describe_value(obj, msg, sizeof msg);
    status =
        herd_seterr(HERD_ECORRUPT, "%s:%zu: expected a JSON object, got %s", origin, line, msg);
  } else if (schema == HERD_SCHEMA_PREFERENCE && check_preference(obj, msg, sizeof msg)) {
    status = herd_seterr(HERD_EINVAL, "%s:%zu: %s", origin, line, msg);
  } else if (line > UINT32_MAX) {
    status = herd_seterr(HERD_EINVAL, "%s:%zu: too many lines", origin, line);
  } else {
    status = store_append(s, text, len, obj, origin_id, (uint32_t)line);
  }
  json_decref(obj);
  return status;
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void trim(const char **text, size_t *len) {
  while (*len && is_space(**text)) (*text)++, (*len)--;
  while (*len && is_space((*text)[*len - 1])) (*len)--;
}

int herd_dataset_load_jsonl(herd_dataset **out, const char *path, int schema) {
  *out = NULL;
  int status = check_schema(schema);
  if (status) return status;
  FILE *f = fopen(path, "rb");
  if (!f)
    return herd_seterr(errno == ENOENT ? HERD_ENOTFOUND : HERD_EIO, "%s: cannot open: %s", path,
                       strerror(errno));
  ds_store *s = store_new();
  uint32_t origin_id = s ? intern_add(&s->origins, path, strlen(path)) : 0;
  if (!origin_id) {
    fclose(f);
    store_release(s);
    return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
  }
  char *buf = NULL;
  size_t buf_cap = 0, line = 0;
  ssize_t got;
  errno = 0;
  while (!status && (got = getline(&buf, &buf_cap, f)) >= 0) {
    line++;
    const char *text = buf;
    size_t len = (size_t)got;
    int truncated = len == 0 || buf[len - 1] != '\n';
    if (line == 1 && len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3, len -= 3;
    trim(&text, &len);
    if (len == 0) continue;
    status = load_line(s, text, len, path, origin_id, line, schema, truncated);
  }
  if (!status && ferror(f)) status = herd_seterr(HERD_EIO, "%s: read error", path);
  free(buf);
  fclose(f);
  if (status) {
    store_release(s);
    return status;
  }
  return view_all(out, s);
}

int herd_dataset_from_lines(herd_dataset **out, const char *const *lines, const size_t *lens,
                            size_t n, const char *origin, int schema) {
  *out = NULL;
  int status = check_schema(schema);
  if (status) return status;
  if (!origin) origin = "(lines)";
  ds_store *s = store_new();
  uint32_t origin_id = s ? intern_add(&s->origins, origin, strlen(origin)) : 0;
  if (!origin_id || store_reserve(s, n)) {
    store_release(s);
    return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
  }
  for (size_t i = 0; i < n && !status; i++) {
    const char *text = lines[i];
    size_t len = lens ? lens[i] : strlen(text);
    trim(&text, &len);
    if (len == 0) continue;
    status = load_line(s, text, len, origin, origin_id, i + 1, schema, 0);
  }
  if (status) {
    store_release(s);
    return status;
  }
  return view_all(out, s);
}

int herd_dataset_validate(const herd_dataset *ds, int schema) {
  int status = check_schema(schema);
  for (size_t i = 0; i < ds->n && !status; i++) {
    uint32_t r = ds->idx[i];
    const ds_store *s = ds->store;
    json_error_t err;
    json_t *obj = json_loadb(s->text + s->offset[r], s->length[r], JSON_FLAGS, &err);
    char msg[512];
    if (!obj) return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
    if (schema == HERD_SCHEMA_PREFERENCE && check_preference(obj, msg, sizeof msg))
      status = herd_seterr(HERD_EINVAL, "%s:%u: %s", s->origins.values[s->origin[r] - 1],
                           s->line[r], msg);
    json_decref(obj);
  }
  return status;
}

// ---------------------------------------------------------------- views

int herd_dataset_select(herd_dataset **out, const herd_dataset *ds, const size_t *idx, size_t n) {
  *out = NULL;
  for (size_t i = 0; i < n; i++)
    if (idx[i] >= ds->n)
      return herd_seterr(HERD_EINVAL, "dataset: index %zu out of range (%zu records)", idx[i],
                         ds->n);
  int status = view_new(out, ds->store, n);
  if (status) return status;
  for (size_t i = 0; i < n; i++) (*out)->idx[i] = ds->idx[idx[i]];
  return 0;
}

static int values_equal(const json_t *a, const json_t *b) {
  if (json_is_number(a) && json_is_number(b)) return json_number_value(a) == json_number_value(b);
  return json_equal(a, b);
}

int herd_dataset_filter_eq(herd_dataset **out, const herd_dataset *ds, const char *const *fields,
                           const char *const *json_values, size_t n_conditions) {
  *out = NULL;
  const ds_store *s = ds->store;
  json_t **values = calloc(n_conditions ? n_conditions : 1, sizeof *values);
  int *column = calloc(n_conditions ? n_conditions : 1, sizeof *column);  // -1 generic, 4 batch
  uint32_t *ids = calloc(n_conditions ? n_conditions : 1, sizeof *ids);
  int status = 0, generic = 0;
  if (!values || !column || !ids) status = herd_seterr(HERD_ENOMEM, "dataset: out of memory");
  for (size_t k = 0; k < n_conditions && !status; k++) {
    json_error_t err;
    values[k] = json_loads(json_values[k], JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!values[k]) {
      status = herd_seterr(HERD_EINVAL, "filter: field '%s': the value is not JSON: %s", fields[k],
                           err.text);
      break;
    }
    column[k] = -1;
    for (int c = 0; c < HERD_DS_NCATEGORIES; c++)
      if (strcmp(fields[k], category_fields[c]) == 0 && json_is_string(values[k])) {
        column[k] = c;
        ids[k] = intern_find(&s->interned[c], json_string_value(values[k]),
                             json_string_length(values[k]));
      }
    if (strcmp(fields[k], "batch") == 0 && json_is_number(values[k])) column[k] = 4;
    if (column[k] < 0) generic = 1;
  }
  size_t kept = 0;
  uint32_t *keep = status ? NULL : malloc((ds->n ? ds->n : 1) * sizeof *keep);
  if (!status && !keep) status = herd_seterr(HERD_ENOMEM, "dataset: out of memory");
  for (size_t i = 0; i < ds->n && !status; i++) {
    uint32_t r = ds->idx[i];
    int match = 1;
    for (size_t k = 0; k < n_conditions && match; k++) {
      if (column[k] >= 0 && column[k] < HERD_DS_NCATEGORIES)
        match = ids[k] != 0 && s->cat[column[k]][r] == ids[k];
      else if (column[k] == 4)
        match = s->batch[r] == json_number_value(values[k]);
    }
    if (match && generic) {
      json_error_t err;
      json_t *obj = json_loadb(s->text + s->offset[r], s->length[r], JSON_FLAGS, &err);
      if (!obj) {
        status = herd_seterr(HERD_ENOMEM, "dataset: out of memory");
        break;
      }
      for (size_t k = 0; k < n_conditions && match; k++) {
        if (column[k] >= 0) continue;
        json_t *v = json_object_get(obj, fields[k]);
        match = v && values_equal(v, values[k]);
      }
      json_decref(obj);
    }
    if (match) keep[kept++] = r;
  }
  if (!status && !(status = view_new(out, ds->store, kept)))
    memcpy((*out)->idx, keep, kept * sizeof *keep);
  for (size_t k = 0; values && k < n_conditions; k++) json_decref(values[k]);
  free(values), free(column), free(ids), free(keep);
  return status;
}

// A uniform integer in [0, bound) from draw `counter` of `seed` (64 random bits, multiply-shift).
static size_t uniform_below(uint64_t seed, uint64_t counter, size_t bound) {
  uint32_t w[4];
  herd_philox(seed, counter, 0x64617461ull /* "data" */, w);
  uint64_t x = (uint64_t)w[0] | (uint64_t)w[1] << 32;
  return (size_t)(((unsigned __int128)x * bound) >> 64);
}

// The first k positions of a Philox Fisher-Yates permutation of ds (forward, so any prefix of the
// shuffle equals the sample of that size).
static int permuted_prefix(herd_dataset **out, const herd_dataset *ds, size_t k, uint64_t seed) {
  uint32_t *perm = malloc((ds->n ? ds->n : 1) * sizeof *perm);
  if (!perm) return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
  memcpy(perm, ds->idx, ds->n * sizeof *perm);
  for (size_t i = 0; i < k && i + 1 < ds->n; i++) {
    size_t j = i + uniform_below(seed, i, ds->n - i);
    uint32_t t = perm[i];
    perm[i] = perm[j], perm[j] = t;
  }
  int status = view_new(out, ds->store, k);
  if (!status) memcpy((*out)->idx, perm, k * sizeof *perm);
  free(perm);
  return status;
}

int herd_dataset_shuffle(herd_dataset **out, const herd_dataset *ds, uint64_t seed) {
  *out = NULL;
  return permuted_prefix(out, ds, ds->n, seed);
}

int herd_dataset_sample(herd_dataset **out, const herd_dataset *ds, size_t n, uint64_t seed) {
  *out = NULL;
  if (n > ds->n)
    return herd_seterr(HERD_EINVAL, "sample: n = %zu is more than the dataset's %zu records", n,
                       ds->n);
  return permuted_prefix(out, ds, n, seed);
}

int herd_dataset_split(herd_dataset **first, herd_dataset **second, const herd_dataset *ds,
                       double fraction, uint64_t seed, int shuffle) {
  *first = *second = NULL;
  if (!(fraction >= 0 && fraction <= 1))
    return herd_seterr(HERD_EINVAL, "split: fraction %g is not in [0, 1]", fraction);
  herd_dataset *order = NULL;
  int status = shuffle ? herd_dataset_shuffle(&order, ds, seed) : 0;
  if (status) return status;
  const herd_dataset *src = shuffle ? order : ds;
  size_t k = (size_t)floor(fraction * (double)ds->n + 0.5);
  if (k > ds->n) k = ds->n;
  status = view_new(first, ds->store, k);
  if (!status) status = view_new(second, ds->store, ds->n - k);
  if (!status) {
    memcpy((*first)->idx, src->idx, k * sizeof *src->idx);
    memcpy((*second)->idx, src->idx + k, (ds->n - k) * sizeof *src->idx);
  } else {
    herd_dataset_free(*first);
    *first = NULL;
  }
  herd_dataset_free(order);
  return status;
}

int herd_dataset_concat(herd_dataset **out, const herd_dataset *a, const herd_dataset *b) {
  *out = NULL;
  if (a->n + b->n > UINT32_MAX) return herd_seterr(HERD_EINVAL, "concat: more than 2^32 records");
  if (a->store == b->store) {
    int status = view_new(out, a->store, a->n + b->n);
    if (status) return status;
    memcpy((*out)->idx, a->idx, a->n * sizeof *a->idx);
    memcpy((*out)->idx + a->n, b->idx, b->n * sizeof *b->idx);
    return 0;
  }
  ds_store *s = store_new();
  int status = s ? store_reserve(s, a->n + b->n) : herd_seterr(HERD_ENOMEM, "out of memory");
  for (size_t i = 0; i < a->n && !status; i++) status = store_copy(s, a->store, a->idx[i]);
  for (size_t i = 0; i < b->n && !status; i++) status = store_copy(s, b->store, b->idx[i]);
  if (status) {
    store_release(s);
    return status;
  }
  return view_all(out, s);
}

// ---------------------------------------------------------------- writing

int herd_dataset_write_jsonl(const herd_dataset *ds, const char *path) {
  size_t temp_size = strlen(path) + 32;
  char *temp = malloc(temp_size);
  if (!temp) return herd_seterr(HERD_ENOMEM, "%s: out of memory", path);
  snprintf(temp, temp_size, "%s.tmp-%ld", path, (long)getpid());
  FILE *f = fopen(temp, "wb");
  if (!f) {
    int status = herd_seterr(HERD_EIO, "%s: cannot create %s: %s", path, temp, strerror(errno));
    free(temp);
    return status;
  }
  const char *step = NULL;
  const ds_store *s = ds->store;
  for (size_t i = 0; i < ds->n && !step; i++) {
    uint32_t r = ds->idx[i];
    if (fwrite(s->text + s->offset[r], 1, s->length[r], f) != s->length[r] || fputc('\n', f) < 0)
      step = "writing";
  }
  if (!step && fflush(f)) step = "writing";
  if (!step && fsync(fileno(f))) step = "syncing";
  int err = errno;
  if (fclose(f) && !step) step = "closing", err = errno;
  if (!step && rename(temp, path)) step = "renaming", err = errno;
  if (!step && herd_sync_directory(path)) step = "syncing the directory of", err = errno;
  int status = 0;
  if (step) {
    unlink(temp);
    status = herd_seterr(HERD_EIO, "%s: %s %s: %s", path, step, temp, strerror(err));
  }
  free(temp);
  return status;
}

// ---------------------------------------------------------------- statistics

static int compare_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

static int compare_count(const void *a, const void *b) {
  return strcmp(((const herd_dataset_count *)a)->value, ((const herd_dataset_count *)b)->value);
}

static int lengths_of(const herd_dataset *ds, const int32_t *col, herd_dataset_lengths *out,
                      int32_t *scratch) {
  size_t n = 0;
  int64_t total = 0;
  for (size_t i = 0; i < ds->n; i++) {
    int32_t v = col[ds->idx[i]];
    if (v >= 0) scratch[n++] = v, total += v;
  }
  memset(out, 0, sizeof *out);
  out->n = n;
  if (!n) return 0;
  qsort(scratch, n, sizeof *scratch, compare_i32);
  out->min = scratch[0];
  out->max = scratch[n - 1];
  out->median = scratch[n / 2];
  out->total = total;
  out->mean = (double)total / (double)n;
  return 0;
}

void herd_dataset_stats_free(herd_dataset_stats *stats) {
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) free(stats->counts[c]);
  free(stats->batches);
  memset(stats, 0, sizeof *stats);
}

static int compare_batch(const void *a, const void *b) {
  int64_t x = ((const herd_dataset_batch_count *)a)->batch;
  int64_t y = ((const herd_dataset_batch_count *)b)->batch;
  return (x > y) - (x < y);
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int herd_dataset_describe(const herd_dataset *ds, herd_dataset_stats *stats) {
  memset(stats, 0, sizeof *stats);
  const ds_store *s = ds->store;
  stats->n = ds->n;
  size_t *tally = NULL;
  int32_t *scratch = malloc((ds->n ? ds->n : 1) * sizeof *scratch);
  double *batches = malloc((ds->n ? ds->n : 1) * sizeof *batches);
  if (!scratch || !batches) goto nomem;
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) {
    size_t nv = s->interned[c].n;
    tally = calloc(nv + 1, sizeof *tally);
    if (!tally) goto nomem;
    for (size_t i = 0; i < ds->n; i++) tally[s->cat[c][ds->idx[i]]]++;
    size_t used = 0;
    for (size_t id = 1; id <= nv; id++) used += tally[id] > 0;
    stats->counts[c] = malloc((used ? used : 1) * sizeof *stats->counts[c]);
    if (!stats->counts[c]) goto nomem;
    for (size_t id = 1; id <= nv; id++)
      if (tally[id])
        stats->counts[c][stats->n_counts[c]++] =
            (herd_dataset_count){s->interned[c].values[id - 1], tally[id]};
    qsort(stats->counts[c], stats->n_counts[c], sizeof *stats->counts[c], compare_count);
    free(tally);
    tally = NULL;
  }
  size_t nb = 0;
  for (size_t i = 0; i < ds->n; i++) {
    double b = s->batch[ds->idx[i]];
    if (b == floor(b) && fabs(b) < 9e15) batches[nb++] = b;  // NaN fails the first test
  }
  qsort(batches, nb, sizeof *batches, compare_double);
  stats->batches = malloc((nb ? nb : 1) * sizeof *stats->batches);
  if (!stats->batches) goto nomem;
  for (size_t i = 0; i < nb; i++) {
    if (i == 0 || batches[i] != batches[i - 1])
      stats->batches[stats->n_batches++] = (herd_dataset_batch_count){(int64_t)batches[i], 0};
    stats->batches[stats->n_batches - 1].count++;
  }
  qsort(stats->batches, stats->n_batches, sizeof *stats->batches, compare_batch);
  lengths_of(ds, s->chars[0], &stats->prompt, scratch);
  lengths_of(ds, s->chars[1], &stats->chosen, scratch);
  lengths_of(ds, s->chars[2], &stats->rejected, scratch);
  size_t with_turns = 0, turns = 0;
  for (size_t i = 0; i < ds->n; i++) {
    uint32_t r = ds->idx[i];
    stats->n_dialogs += s->is_dialog[r];
    if (s->turns[r]) with_turns++, turns += s->turns[r];
  }
  stats->mean_turns = with_turns ? (double)turns / (double)with_turns : 0;
  free(scratch), free(batches);
  return 0;
nomem:
  free(tally), free(scratch), free(batches);
  herd_dataset_stats_free(stats);
  return herd_seterr(HERD_ENOMEM, "dataset: out of memory");
}

// ---------------------------------------------------------------- packing for SFT

void herd_packed_free(herd_packed *p) {
  if (!p) return;
  free(p->tokens), free(p->targets), free(p->weights), free(p->segments), free(p->positions);
  free(p->sample_row), free(p->sample_start), free(p->sample_len);
  memset(p, 0, sizeof *p);
}

static int check_pack_options(const herd_pack_options *o) {
  // seq 1 would leave no room for a target inside any sample.
  if (o->seq < 2) return herd_seterr(HERD_EINVAL, "pack: seq = %d; it must be at least 2", o->seq);
  if (o->pad < 0) return herd_seterr(HERD_EINVAL, "pack: pad = %d is not a token id", (int)o->pad);
  if (o->overlong != HERD_PACK_TRUNCATE && o->overlong != HERD_PACK_ERROR)
    return herd_seterr(HERD_EINVAL, "pack: overlong = %d is neither truncate nor error",
                       o->overlong);
  return 0;
}

// Trained targets among tokens 1..len-1 (token 0 is never predicted).
static size_t trained_in(const float *mask, int len) {
  size_t n = 0;
  for (int t = 1; t < len; t++) n += mask[t] != 0.0f;
  return n;
}

// Validates sample i and sets *keep to the tokens it contributes (0: skipped after truncation).
static int check_pack_sample(const herd_pack_sample *s, size_t i, const herd_pack_options *o,
                             herd_pack_stats *stats, int *keep) {
  long long number = (long long)i + o->index_base;
  if (s->len < 0 || (s->len > 0 && (!s->ids || !s->mask)))
    return herd_seterr(HERD_EINVAL, "pack: sample %lld: no ids or mask", number);
  for (int t = 0; t < s->len; t++) {
    if (s->ids[t] < 0)
      return herd_seterr(HERD_EINVAL, "pack: sample %lld: ids[%d] = %d is not a token id", number,
                         t + o->index_base, (int)s->ids[t]);
    if (s->mask[t] != 0.0f && s->mask[t] != 1.0f)
      return herd_seterr(HERD_EINVAL, "pack: sample %lld: mask[%d] = %g; it must be 0 or 1", number,
                         t + o->index_base, (double)s->mask[t]);
  }
  // An empty mask is a data bug (a dialog without an answer): never skip it silently.
  if (!trained_in(s->mask, s->len))
    return herd_seterr(HERD_EINVAL, "pack: sample %lld: no answer token to train on", number);
  *keep = s->len;
  if (s->len <= o->seq) return 0;
  if (o->overlong == HERD_PACK_ERROR)
    return herd_seterr(HERD_EINVAL,
                       "pack: sample %lld: %d tokens exceed seq = %d (overlong = error)", number,
                       s->len, o->seq);
  stats->truncated++;
  *keep = o->seq;
  if (!trained_in(s->mask, o->seq)) {  // its answers were all beyond the cut
    stats->skipped++;
    *keep = 0;
  }
  return 0;
}

static int pack_alloc_rows(herd_packed *p) {
  size_t cells = (size_t)p->rows * (size_t)p->seq, c = cells ? cells : 1;
  p->tokens = malloc(c * sizeof *p->tokens);
  p->targets = malloc(c * sizeof *p->targets);
  p->weights = malloc(c * sizeof *p->weights);
  p->segments = malloc(c * sizeof *p->segments);
  p->positions = malloc(c * sizeof *p->positions);
  if (p->tokens && p->targets && p->weights && p->segments && p->positions) return 0;
  return herd_seterr(HERD_ENOMEM, "pack: out of memory for %d rows of %d", p->rows, p->seq);
}

static int pack_alloc_placement(herd_packed *p, size_t n) {
  size_t m = n ? n : 1;
  p->n_samples = n;
  p->sample_row = malloc(m * sizeof *p->sample_row);
  p->sample_start = malloc(m * sizeof *p->sample_start);
  p->sample_len = malloc(m * sizeof *p->sample_len);
  if (p->sample_row && p->sample_start && p->sample_len) return 0;
  return herd_seterr(HERD_ENOMEM, "pack: out of memory for %zu samples", n);
}

// Writes `len` tokens of s at flat offset `at` as segment `segment`.
static void place_sample(herd_packed *p, const herd_pack_sample *s, size_t at, int len,
                         int32_t segment) {
  for (int t = 0; t < len; t++) {
    size_t q = at + (size_t)t;
    int last = t == len - 1;  // nothing is predicted across a sample boundary
    p->tokens[q] = s->ids[t];
    p->targets[q] = last ? -1 : s->ids[t + 1];
    p->weights[q] = last ? 0.0f : s->mask[t + 1];
    p->segments[q] = segment;
    p->positions[q] = t;
  }
}

// The rest of a row from column `used`: pad tokens, no targets, one segment of their own.
static void place_padding(herd_packed *p, int row, int used, int32_t segment, int32_t pad) {
  for (int c = used; c < p->seq; c++) {
    size_t q = (size_t)row * (size_t)p->seq + (size_t)c;
    p->tokens[q] = pad;
    p->targets[q] = -1;
    p->weights[q] = 0.0f;
    p->segments[q] = segment;
    p->positions[q] = c - used;
  }
}

// Greedy placement in input order: rows, and each kept sample's row and start column.
static void pack_plan(herd_packed *p, size_t n) {
  int row = -1, used = p->seq;
  for (size_t i = 0; i < n; i++) {
    int keep = p->sample_len[i];
    p->sample_row[i] = -1;
    p->sample_start[i] = 0;
    if (!keep) continue;
    if (used + keep > p->seq) row++, used = 0;
    p->sample_row[i] = row;
    p->sample_start[i] = used;
    used += keep;
  }
  p->rows = row + 1;
}

static void pack_fill(herd_packed *p, const herd_pack_sample *samples, size_t n, int32_t pad) {
  int row = 0, used = 0;
  int32_t segment = 0;
  for (size_t i = 0; i < n; i++) {
    if (p->sample_row[i] < 0) continue;
    if (p->sample_row[i] != row) {
      place_padding(p, row, used, segment, pad);
      row = p->sample_row[i], used = 0, segment = 0;
    }
    size_t at = (size_t)row * (size_t)p->seq + (size_t)p->sample_start[i];
    place_sample(p, &samples[i], at, p->sample_len[i], segment++);
    used += p->sample_len[i];
    p->stats.samples++;
    p->stats.tokens += (size_t)p->sample_len[i];
    p->stats.trained += trained_in(samples[i].mask, p->sample_len[i]);
  }
  if (p->rows) place_padding(p, row, used, segment, pad);
}

int herd_pack(herd_packed *out, const herd_pack_sample *samples, size_t n,
              const herd_pack_options *options) {
  if (!out || !options || (n && !samples)) return herd_seterr(HERD_EINVAL, "pack: NULL argument");
  memset(out, 0, sizeof *out);
  int status = check_pack_options(options);
  if (status) return status;
  if (n > INT32_MAX) return herd_seterr(HERD_EINVAL, "pack: %zu samples is too many", n);
  herd_packed p = {0};
  p.seq = options->seq;
  // sample_len holds each sample's kept length until the plan turns it into placements.
  status = pack_alloc_placement(&p, n);
  for (size_t i = 0; i < n && !status; i++) {
    int keep = 0;
    status = check_pack_sample(&samples[i], i, options, &p.stats, &keep);
    p.sample_len[i] = keep;
  }
  if (!status) {
    pack_plan(&p, n);
    status = pack_alloc_rows(&p);
  }
  if (status) {
    herd_packed_free(&p);
    return status;
  }
  pack_fill(&p, samples, n, options->pad);
  p.stats.rows = (size_t)p.rows;
  p.stats.padding = (size_t)p.rows * (size_t)p.seq - p.stats.tokens;
  *out = p;
  return 0;
}
