// Dataset tests: loading JSONL, views (select, filter, shuffle, sample, split, concat), the
// byte-stable writer, statistics, preference-schema errors naming file:line:field, malformed
// lines, and the memory used by 100k records.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dataset.h"
#include "error.h"

static char dir[64];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/herd-dataset-XXXXXX");
  cr_assert(mkdtemp(dir));
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

static const char *path_of(const char *name) {
  static char path[4][128];
  static int next;
  char *p = path[next++ % 4];
  snprintf(p, 128, "%s/%s", dir, name);
  return p;
}

static const char *write_file(const char *name, const char *text) {
  const char *path = path_of(name);
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert(f, "%s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = malloc((size_t)n + 1);
  cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
  text[n] = 0;
  fclose(f);
  return text;
}

#define PAIR(rating, domain, extra, batch, source)                                           \
  "{\"prompt\":\"What is 2+2?\",\"chosen\":\"4\",\"rejected\":\"five\",\"rating\":\"" rating \
  "\",\"domain\":\"" domain "\"" extra ",\"batch\":" #batch ",\"source\":\"" source "\"}\n"

static const char *prefs =
    PAIR("better", "helpful", "", 1, "world")
    "\n"
    PAIR("significantly better", "safety", ",\"safety_bin\":\"both_safe\"", 1, "world")
    "   \n"
    PAIR("negligibly better", "helpful", "", 2, "anthropic")
    "{\"dialog\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":"
    "\"héllo\"}],\"chosen\":\"hi\",\"rejected\":\"go away\",\"rating\":\"unsure\",\"domain\":"
    "\"safety\",\"safety_bin\":\"chosen_safe_rejected_unsafe\",\"batch\":2,\"source\":\"world\"}\n"
    PAIR("better", "helpful", "", 3, "shp");

static herd_dataset *load(const char *text, int schema) {
  herd_dataset *ds = NULL;
  int rc = herd_dataset_load_jsonl(&ds, write_file("prefs.jsonl", text), schema);
  cr_assert_eq(rc, 0, "load: %s", herd_errmsg());
  return ds;
}

static const char *text_of(const herd_dataset *ds, size_t i) {
  const char *text;
  cr_assert_eq(herd_dataset_record(ds, i, &text, NULL), 0, "%s", herd_errmsg());
  return text;
}

// The load error for `text` under `schema`: the status and the message.
static int load_error(const char *text, int schema, const char **msg) {
  herd_dataset *ds = NULL;
  int rc = herd_dataset_load_jsonl(&ds, write_file("bad.jsonl", text), schema);
  cr_assert_null(ds);
  *msg = herd_errmsg();
  return rc;
}

TestSuite(dataset, .init = setup, .fini = teardown);

Test(dataset, load_and_index) {
  herd_dataset *ds = load(prefs, HERD_SCHEMA_PREFERENCE);
  cr_assert_eq(herd_dataset_size(ds), 5);
  cr_assert(strstr(text_of(ds, 0), "\"rating\":\"better\""));
  cr_assert(strstr(text_of(ds, 3), "\"dialog\""));
  const char *file;
  int64_t line;
  cr_assert_eq(herd_dataset_origin(ds, 2, &file, &line), 0);
  cr_assert_eq(line, 5, "blank lines count as lines");
  cr_assert(strstr(file, "prefs.jsonl"));
  const char *text;
  cr_assert_eq(herd_dataset_record(ds, 5, &text, NULL), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "out of range"));
  herd_dataset_free(ds);
}

Test(dataset, missing_file) {
  herd_dataset *ds;
  cr_assert_eq(herd_dataset_load_jsonl(&ds, path_of("nope.jsonl"), 0), HERD_ENOTFOUND);
  cr_assert(strstr(herd_errmsg(), "nope.jsonl: cannot open"), "%s", herd_errmsg());
}

Test(dataset, empty_file_and_any_object_without_schema) {
  herd_dataset *ds = load("", 0);
  cr_assert_eq(herd_dataset_size(ds), 0);
  herd_dataset_free(ds);
  ds = load("\xEF\xBB\xBF{\"a\":1}\r\n{\"b\":[1,2]}", 0);  // a UTF-8 BOM, CRLF, no final newline
  cr_assert_eq(herd_dataset_size(ds), 2);
  cr_assert_str_eq(text_of(ds, 1), "{\"b\":[1,2]}");
  herd_dataset_free(ds);
}

Test(dataset, malformed_lines_name_file_and_line) {
  const char *msg;
  cr_assert_eq(load_error("{\"a\":1}\n\n{\"a\":\n{\"a\":2}\n", 0, &msg), HERD_ECORRUPT);
  cr_assert(strstr(msg, "bad.jsonl:3: invalid JSON"), "%s", msg);
  cr_assert_eq(load_error("{\"a\":1}\n[1,2]\n", 0, &msg), HERD_ECORRUPT);
  cr_assert(strstr(msg, "bad.jsonl:2: expected a JSON object, got an array"), "%s", msg);
  cr_assert_eq(load_error("{\"a\":1}\n\"text\"\n", 0, &msg), HERD_ECORRUPT);
  cr_assert(strstr(msg, "bad.jsonl:2: expected a JSON object, got \"text\""), "%s", msg);
  cr_assert_eq(load_error("{\"a\":1}\n{\"a\":1,\"a\":2}\n", 0, &msg), HERD_ECORRUPT);
  cr_assert(strstr(msg, "bad.jsonl:2:"), "%s", msg);
  cr_assert_eq(load_error("{\"a\":1}\n{\"a\":1}{\"b\":2}\n", 0, &msg), HERD_ECORRUPT);
  cr_assert(strstr(msg, "bad.jsonl:2:"), "%s", msg);
  cr_assert_eq(load_error("{\"a\":1}\n{\"a\":1}\n{\"prompt\":\"tru", 0, &msg), HERD_ECORRUPT);
  cr_assert(strstr(msg, "bad.jsonl:3: invalid JSON"), "%s", msg);
  cr_assert(strstr(msg, "truncated last line"), "%s", msg);
}

// Each broken record: the expected "file:line: field 'x'" fragment.
Test(dataset, preference_schema_errors_name_file_line_field) {
  static const struct {
    const char *record;
    const char *expect;
  } cases[] = {
      {"{\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":\"helpful\"}",
       "field 'prompt': missing"},
      {"{\"prompt\":1,\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"helpful\"}",
       "field 'prompt': expected a string, got 1"},
      {"{\"prompt\":\"p\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":\"helpful\"}",
       "field 'chosen': missing"},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":null,\"rating\":\"better\",\"domain\":"
       "\"helpful\"}",
       "field 'rejected': expected a string, got null"},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"domain\":\"helpful\"}",
       "field 'rating': missing"},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"great\",\"domain\":"
       "\"helpful\"}",
       "field 'rating': expected one of \"significantly better\", \"better\", \"slightly better\", "
       "\"negligibly better\", \"unsure\", got \"great\""},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"fun\"}",
       "field 'domain': expected one of \"helpful\", \"safety\", got \"fun\""},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"safety\"}",
       "field 'safety_bin': missing"},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"safety\",\"safety_bin\":\"rejected_safe\"}",
       "field 'safety_bin': expected one of \"chosen_safe_rejected_unsafe\""},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"helpful\",\"safety_bin\":\"both_safe\"}",
       "field 'safety_bin': only for domain \"safety\""},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"helpful\",\"batch\":\"1\"}",
       "field 'batch': expected a non-negative integer, got \"1\""},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"helpful\",\"batch\":1.5}",
       "field 'batch': expected a non-negative integer"},
      {"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"helpful\",\"source\":\"\"}",
       "field 'source': expected a non-empty string"},
      {"{\"prompt\":\"p\",\"dialog\":[],\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\","
       "\"domain\":\"helpful\"}",
       "field 'dialog': give either"},
      {"{\"dialog\":[],\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":"
       "\"helpful\"}",
       "field 'dialog': expected a non-empty array"},
      {"{\"dialog\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"bot\",\"content\":\"a\"}],"
       "\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":\"helpful\"}",
       "field 'dialog[2].role': expected one of \"system\", \"user\", \"assistant\", got \"bot\""},
      {"{\"dialog\":[{\"role\":\"user\"}],\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":"
       "\"better\","
       "\"domain\":\"helpful\"}",
       "field 'dialog[1].content': missing"},
      {"{\"dialog\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":"
       "\"a\"}],\"chosen\":\"a\",\"rejected\":\"b\",\"rating\":\"better\",\"domain\":\"helpful\"}",
       "field 'dialog[2].role': the last message must be the user's"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char text[2048], expect[512];
    snprintf(text, sizeof text, "%s%s\n", PAIR("better", "helpful", "", 1, "world"),
             cases[i].record);
    snprintf(expect, sizeof expect, "bad.jsonl:2: %s", cases[i].expect);
    const char *msg;
    cr_assert_eq(load_error(text, HERD_SCHEMA_PREFERENCE, &msg), HERD_EINVAL, "case %zu", i);
    cr_assert(strstr(msg, expect), "case %zu: %s\n  expected: %s", i, msg, expect);
    // Without a schema the same record loads.
    herd_dataset *ds;
    cr_assert_eq(herd_dataset_load_jsonl(&ds, path_of("bad.jsonl"), 0), 0, "%s", herd_errmsg());
    cr_assert_eq(herd_dataset_size(ds), 2);
    cr_assert_eq(herd_dataset_validate(ds, HERD_SCHEMA_PREFERENCE), HERD_EINVAL);
    cr_assert(strstr(herd_errmsg(), expect), "validate: %s", herd_errmsg());
    herd_dataset_free(ds);
  }
}

Test(dataset, filter) {
  herd_dataset *ds = load(prefs, HERD_SCHEMA_PREFERENCE), *f;
  const char *fields[] = {"domain", "batch"};
  const char *values[] = {"\"safety\"", "2"};
  cr_assert_eq(herd_dataset_filter_eq(&f, ds, fields, values, 1), 0);
  cr_assert_eq(herd_dataset_size(f), 2);
  cr_assert(strstr(text_of(f, 1), "dialog"));
  herd_dataset_free(f);
  cr_assert_eq(herd_dataset_filter_eq(&f, ds, fields, values, 2), 0);
  cr_assert_eq(herd_dataset_size(f), 1);
  herd_dataset_free(f);
  const char *batch_real[] = {"2.0"};
  cr_assert_eq(herd_dataset_filter_eq(&f, ds, fields + 1, batch_real, 1), 0);
  cr_assert_eq(herd_dataset_size(f), 2);
  herd_dataset_free(f);
  // Generic fields (parsed per record), unknown values, missing fields.
  const char *chosen[] = {"chosen"}, *hi[] = {"\"hi\""};
  cr_assert_eq(herd_dataset_filter_eq(&f, ds, chosen, hi, 1), 0);
  cr_assert_eq(herd_dataset_size(f), 1);
  herd_dataset_free(f);
  const char *source[] = {"source"}, *none[] = {"\"nobody\""};
  cr_assert_eq(herd_dataset_filter_eq(&f, ds, source, none, 1), 0);
  cr_assert_eq(herd_dataset_size(f), 0);
  herd_dataset_free(f);
  const char *missing[] = {"nothere"}, *one[] = {"1"};
  cr_assert_eq(herd_dataset_filter_eq(&f, ds, missing, one, 1), 0);
  cr_assert_eq(herd_dataset_size(f), 0);
  herd_dataset_free(f);
  const char *bad[] = {"{"};
  cr_assert_eq(herd_dataset_filter_eq(&f, ds, source, bad, 1), HERD_EINVAL);
  // A filter of a filter.
  herd_dataset *world;
  const char *w[] = {"\"world\""};
  cr_assert_eq(herd_dataset_filter_eq(&world, ds, source, w, 1), 0);
  cr_assert_eq(herd_dataset_size(world), 3);
  cr_assert_eq(herd_dataset_filter_eq(&f, world, fields, values, 1), 0);
  cr_assert_eq(herd_dataset_size(f), 2);
  herd_dataset_free(world);  // f keeps the storage alive
  cr_assert(strstr(text_of(f, 0), "significantly"));
  herd_dataset_free(f);
  herd_dataset_free(ds);
}

// n records {"i": k} for k = 0..n-1.
static herd_dataset *numbered(size_t n) {
  char **lines = malloc(n * sizeof *lines);
  for (size_t i = 0; i < n; i++) {
    lines[i] = malloc(32);
    snprintf(lines[i], 32, "{\"i\":%zu}", i);
  }
  herd_dataset *ds;
  cr_assert_eq(herd_dataset_from_lines(&ds, (const char *const *)lines, NULL, n, "numbers", 0), 0,
               "%s", herd_errmsg());
  for (size_t i = 0; i < n; i++) free(lines[i]);
  free(lines);
  return ds;
}

static long number_of(const herd_dataset *ds, size_t i) {
  long k = -1;
  cr_assert_eq(sscanf(text_of(ds, i), "{\"i\":%ld}", &k), 1);
  return k;
}

Test(dataset, shuffle_is_a_deterministic_permutation) {
  herd_dataset *ds = numbered(1000), *a, *b, *c;
  cr_assert_eq(herd_dataset_shuffle(&a, ds, 42), 0);
  cr_assert_eq(herd_dataset_shuffle(&b, ds, 42), 0);
  cr_assert_eq(herd_dataset_shuffle(&c, ds, 43), 0);
  int seen[1000] = {0}, same_c = 1, moved = 0;
  for (size_t i = 0; i < 1000; i++) {
    long k = number_of(a, i);
    cr_assert(k >= 0 && k < 1000 && !seen[k]);
    seen[k] = 1;
    cr_assert_eq(number_of(b, i), k);
    same_c &= number_of(c, i) == k;
    moved += k != (long)i;
  }
  cr_assert(!same_c, "another seed, another order");
  cr_assert_gt(moved, 900);
  // Pinned: the order depends on the seed alone (Philox), so it is the same on every machine.
  herd_dataset *small = numbered(8), *s;
  cr_assert_eq(herd_dataset_shuffle(&s, small, 1), 0);
  char order[16] = "";
  for (size_t i = 0; i < 8; i++) order[i] = (char)('0' + number_of(s, i));
  cr_assert_str_eq(order, "16324570");
  herd_dataset_free(s);
  herd_dataset_free(small);
  herd_dataset_free(a), herd_dataset_free(b), herd_dataset_free(c), herd_dataset_free(ds);
}

Test(dataset, sample_is_a_prefix_of_shuffle) {
  herd_dataset *ds = numbered(100), *sh, *sa;
  cr_assert_eq(herd_dataset_shuffle(&sh, ds, 7), 0);
  cr_assert_eq(herd_dataset_sample(&sa, ds, 10, 7), 0);
  cr_assert_eq(herd_dataset_size(sa), 10);
  for (size_t i = 0; i < 10; i++) cr_assert_eq(number_of(sa, i), number_of(sh, i));
  herd_dataset_free(sa);
  cr_assert_eq(herd_dataset_sample(&sa, ds, 101, 7), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "101"));
  cr_assert_eq(herd_dataset_sample(&sa, ds, 0, 7), 0);
  cr_assert_eq(herd_dataset_size(sa), 0);
  herd_dataset_free(sa), herd_dataset_free(sh), herd_dataset_free(ds);
}

Test(dataset, split_sizes_and_disjointness) {
  herd_dataset *ds = numbered(101), *a, *b;
  cr_assert_eq(herd_dataset_split(&a, &b, ds, 0.9, 3, 1), 0);
  cr_assert_eq(herd_dataset_size(a), 91);
  cr_assert_eq(herd_dataset_size(b), 10);
  int seen[101] = {0};
  for (size_t i = 0; i < 91; i++) seen[number_of(a, i)]++;
  for (size_t i = 0; i < 10; i++) seen[number_of(b, i)]++;
  for (int i = 0; i < 101; i++) cr_assert_eq(seen[i], 1);
  herd_dataset_free(a), herd_dataset_free(b);
  cr_assert_eq(herd_dataset_split(&a, &b, ds, 0.5, 0, 0), 0);  // in order
  cr_assert_eq(herd_dataset_size(a), 51);
  cr_assert_eq(number_of(a, 50), 50);
  cr_assert_eq(number_of(b, 0), 51);
  herd_dataset_free(a), herd_dataset_free(b);
  cr_assert_eq(herd_dataset_split(&a, &b, ds, 1.5, 0, 1), HERD_EINVAL);
  cr_assert_null(a);
  herd_dataset_free(ds);
}

Test(dataset, select_and_concat) {
  herd_dataset *ds = load(prefs, HERD_SCHEMA_PREFERENCE), *nums = numbered(3), *sel, *cat, *cat2;
  size_t idx[] = {4, 0, 0};
  cr_assert_eq(herd_dataset_select(&sel, ds, idx, 3), 0);
  cr_assert(strstr(text_of(sel, 0), "shp"));
  size_t bad[] = {5};
  herd_dataset *none;
  cr_assert_eq(herd_dataset_select(&none, ds, bad, 1), HERD_EINVAL);
  // Same storage: an index concat; different storages: a copy that keeps origins.
  cr_assert_eq(herd_dataset_concat(&cat, ds, sel), 0);
  cr_assert_eq(herd_dataset_size(cat), 8);
  cr_assert(strstr(text_of(cat, 5), "shp"));
  cr_assert_eq(herd_dataset_concat(&cat2, cat, nums), 0);
  cr_assert_eq(herd_dataset_size(cat2), 11);
  herd_dataset_free(cat), herd_dataset_free(sel), herd_dataset_free(ds);
  cr_assert_eq(number_of(cat2, 10), 2);
  const char *file;
  int64_t line;
  cr_assert_eq(herd_dataset_origin(cat2, 10, &file, &line), 0);
  cr_assert_str_eq(file, "numbers");
  cr_assert_eq(line, 3);
  cr_assert_eq(herd_dataset_origin(cat2, 2, &file, &line), 0);
  cr_assert(strstr(file, "prefs.jsonl"));
  herd_dataset_stats st;
  cr_assert_eq(herd_dataset_describe(cat2, &st), 0);
  cr_assert_eq(st.n_counts[HERD_DS_SOURCE], 3);  // columns survive the copy
  herd_dataset_stats_free(&st);
  herd_dataset_free(cat2), herd_dataset_free(nums);
}

Test(dataset, write_round_trip_is_byte_stable) {
  herd_dataset *ds = load(prefs, HERD_SCHEMA_PREFERENCE), *sh, *back;
  cr_assert_eq(herd_dataset_shuffle(&sh, ds, 5), 0);
  const char *out = path_of("out.jsonl"), *out2 = path_of("out2.jsonl");
  cr_assert_eq(herd_dataset_write_jsonl(sh, out), 0, "%s", herd_errmsg());
  cr_assert_eq(herd_dataset_load_jsonl(&back, out, HERD_SCHEMA_PREFERENCE), 0, "%s", herd_errmsg());
  cr_assert_eq(herd_dataset_size(back), 5);
  for (size_t i = 0; i < 5; i++) cr_assert_str_eq(text_of(back, i), text_of(sh, i));
  cr_assert_eq(herd_dataset_write_jsonl(back, out2), 0);
  char *a = read_file(out), *b = read_file(out2);
  cr_assert_str_eq(a, b);
  cr_assert_eq(a[strlen(a) - 1], '\n');
  free(a), free(b);
  // No temporary left behind; a directory that does not exist is an error naming the path.
  char cmd[256];
  snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", dir);
  cr_assert_neq(system(cmd), 0);
  cr_assert_eq(herd_dataset_write_jsonl(ds, path_of("no/such/dir.jsonl")), HERD_EIO);
  cr_assert(strstr(herd_errmsg(), "dir.jsonl"));
  herd_dataset_free(back), herd_dataset_free(sh), herd_dataset_free(ds);
}

static size_t count_of(const herd_dataset_stats *st, int c, const char *value) {
  for (size_t i = 0; i < st->n_counts[c]; i++)
    if (strcmp(st->counts[c][i].value, value) == 0) return st->counts[c][i].count;
  return 0;
}

Test(dataset, describe_counts_and_lengths) {
  herd_dataset *ds = load(prefs, HERD_SCHEMA_PREFERENCE);
  herd_dataset_stats st;
  cr_assert_eq(herd_dataset_describe(ds, &st), 0);
  cr_assert_eq(st.n, 5);
  cr_assert_eq(count_of(&st, HERD_DS_SOURCE, "world"), 3);
  cr_assert_eq(count_of(&st, HERD_DS_SOURCE, "shp"), 1);
  cr_assert_eq(count_of(&st, HERD_DS_RATING, "better"), 2);
  cr_assert_eq(count_of(&st, HERD_DS_RATING, "unsure"), 1);
  cr_assert_eq(count_of(&st, HERD_DS_DOMAIN, "safety"), 2);
  cr_assert_eq(count_of(&st, HERD_DS_SAFETY_BIN, "both_safe"), 1);
  cr_assert_eq(st.n_counts[HERD_DS_SAFETY_BIN], 2);
  cr_assert_eq(st.n_batches, 3);
  cr_assert_eq(st.batches[0].batch, 1);
  cr_assert_eq(st.batches[0].count, 2);
  cr_assert_eq(st.batches[2].batch, 3);
  // Prompts "What is 2+2?" (12 characters) x4 and a dialog "Be brief." + "héllo" (9 + 5).
  cr_assert_eq(st.prompt.n, 5);
  cr_assert_eq(st.prompt.min, 12);
  cr_assert_eq(st.prompt.max, 14);
  cr_assert_eq(st.prompt.median, 12);
  cr_assert_float_eq(st.prompt.mean, 62.0 / 5, 1e-9);
  cr_assert_eq(st.chosen.max, 2);
  cr_assert_eq(st.rejected.max, 7);
  cr_assert_eq(st.n_dialogs, 1);
  cr_assert_float_eq(st.mean_turns, 1.0, 1e-9);
  herd_dataset_stats_free(&st);
  herd_dataset *empty = numbered(0);
  cr_assert_eq(herd_dataset_describe(empty, &st), 0);
  cr_assert_eq(st.n, 0);
  cr_assert_eq(st.prompt.n, 0);
  herd_dataset_stats_free(&st);
  herd_dataset_free(empty);
  herd_dataset_free(ds);
}

Test(dataset, hundred_thousand_records_are_fast_and_compact) {
  const char *path = path_of("big.jsonl");
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  static const char *const ratings[] = {"significantly better", "better", "slightly better",
                                        "negligibly better"};
  size_t file_bytes = 0;
  for (int i = 0; i < 100000; i++)
    file_bytes += (size_t)fprintf(
        f,
        "{\"prompt\":\"What is %d plus %d? Answer briefly.\",\"chosen\":\"It is %d.\","
        "\"rejected\":\"I think it might be %d, but I am not sure.\",\"rating\":\"%s\","
        "\"domain\":\"helpful\",\"batch\":%d,\"source\":\"world\"}\n",
        i, i + 1, 2 * i + 1, 2 * i, ratings[i % 4], 1 + i % 14);
  fclose(f);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  herd_dataset *ds, *sh, *fl;
  cr_assert_eq(herd_dataset_load_jsonl(&ds, path, HERD_SCHEMA_PREFERENCE), 0, "%s", herd_errmsg());
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  cr_assert_eq(herd_dataset_size(ds), 100000);
  cr_assert_lt(seconds, 5.0, "loading took %.2f s", seconds);
  // The arena holds the text once; the columns and index add 63 bytes a record (a Lua table
  // per record with 7 string fields costs about 370 bytes beyond the text: t/lua/data_test.lua).
  size_t bytes = herd_dataset_bytes(ds);
  cr_assert_lt(bytes, file_bytes + 100000 * 64 + 4096, "%zu bytes for %zu of text", bytes,
               file_bytes);
  cr_assert_eq(herd_dataset_shuffle(&sh, ds, 1), 0);
  const char *rating[] = {"rating"}, *sig[] = {"\"significantly better\""};
  cr_assert_eq(herd_dataset_filter_eq(&fl, sh, rating, sig, 1), 0);
  cr_assert_eq(herd_dataset_size(fl), 25000);
  // Views share the storage: they differ only by their index arrays.
  cr_assert_eq(herd_dataset_bytes(sh), bytes);
  cr_assert_eq(herd_dataset_bytes(fl), bytes - 75000 * sizeof(uint32_t));
  herd_dataset_free(fl), herd_dataset_free(sh), herd_dataset_free(ds);
}

Test(dataset, unknown_schema) {
  herd_dataset *ds;
  cr_assert_eq(herd_dataset_load_jsonl(&ds, write_file("x.jsonl", "{}\n"), 7), HERD_EINVAL);
}

// ---------------------------------------------------------------- packing for SFT

// Sample ids first..first+len-1 with mask 1 at the listed 0-based tokens.
typedef struct pack_case {
  int32_t ids[16];
  float mask[16];
} pack_case;

static herd_pack_sample pack_sample(pack_case *c, int32_t first, int len, int trained) {
  for (int t = 0; t < len; t++) {
    c->ids[t] = first + t;
    c->mask[t] = t >= trained ? 1.0f : 0.0f;  // answers from token `trained` on
  }
  return (herd_pack_sample){c->ids, c->mask, len};
}

Test(pack, greedy_rows_segments_positions_padding) {
  pack_case cases[3];
  herd_pack_sample s[3] = {pack_sample(&cases[0], 1, 3, 2), pack_sample(&cases[1], 10, 4, 1),
                           pack_sample(&cases[2], 20, 5, 4)};
  herd_pack_options opts = {8, 7, HERD_PACK_TRUNCATE, 0};
  herd_packed p;
  cr_assert_eq(herd_pack(&p, s, 3, &opts), 0, "%s", herd_errmsg());
  cr_assert_eq(p.rows, 2, "[3 4] then [5]");
  const int32_t tokens[16] = {1, 2, 3, 10, 11, 12, 13, 7, 20, 21, 22, 23, 24, 7, 7, 7};
  const int32_t targets[16] = {2, 3, -1, 11, 12, 13, -1, -1, 21, 22, 23, 24, -1, -1, -1, -1};
  const float weights[16] = {0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
  const int32_t segments[16] = {0, 0, 0, 1, 1, 1, 1, 2, 0, 0, 0, 0, 0, 1, 1, 1};
  const int32_t positions[16] = {0, 1, 2, 0, 1, 2, 3, 0, 0, 1, 2, 3, 4, 0, 1, 2};
  cr_assert_arr_eq(p.tokens, tokens, sizeof tokens);
  cr_assert_arr_eq(p.targets, targets, sizeof targets);
  cr_assert_arr_eq(p.weights, weights, sizeof weights);
  cr_assert_arr_eq(p.segments, segments, sizeof segments);
  cr_assert_arr_eq(p.positions, positions, sizeof positions);
  cr_assert_eq(p.stats.samples, 3);
  cr_assert_eq(p.stats.tokens, 12);
  cr_assert_eq(p.stats.trained, 5);
  cr_assert_eq(p.stats.padding, 4);
  cr_assert_eq(p.sample_row[2], 1);
  cr_assert_eq(p.sample_start[1], 3);
  herd_packed_free(&p);
  herd_packed_free(&p);  // freeing twice is harmless
}

Test(pack, truncation_counts_and_errors) {
  pack_case cases[3];
  herd_pack_sample s[3] = {pack_sample(&cases[0], 1, 10, 1), pack_sample(&cases[1], 1, 10, 9),
                           pack_sample(&cases[2], 1, 2, 1)};
  herd_pack_options opts = {4, 0, HERD_PACK_TRUNCATE, 0};
  herd_packed p;
  cr_assert_eq(herd_pack(&p, s, 3, &opts), 0, "%s", herd_errmsg());
  cr_assert_eq(p.stats.truncated, 2);
  cr_assert_eq(p.stats.skipped, 1);
  cr_assert_eq(p.stats.samples, 2);
  cr_assert_eq(p.rows, 2);
  cr_assert_eq(p.sample_row[1], -1);
  herd_packed_free(&p);
  opts.overlong = HERD_PACK_ERROR;
  cr_assert_eq(herd_pack(&p, s, 3, &opts), HERD_EINVAL);
  cr_assert_str_eq(herd_errmsg(), "pack: sample 0: 10 tokens exceed seq = 4 (overlong = error)");
  cr_assert_null(p.tokens);
  cases[2].mask[1] = 0;
  opts = (herd_pack_options){16, 0, HERD_PACK_TRUNCATE, 1};
  cr_assert_eq(herd_pack(&p, s, 3, &opts), HERD_EINVAL);
  cr_assert_str_eq(herd_errmsg(), "pack: sample 3: no answer token to train on");
  opts.seq = 1;
  cr_assert_eq(herd_pack(&p, s, 3, &opts), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "seq = 1"), "%s", herd_errmsg());
}
